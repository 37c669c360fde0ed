// The page: loads latentsae.wasm (examples/web/web_api.c) and the model and
// texts from bundle.js (make wasm-page writes it), then encodes, decodes and
// searches in the browser. Opened with #selftest it also exercises the
// choices itself and records what it saw in <div id="lsae-status">
// (tests/test_web.py reads it).
'use strict';
(function () {
  var statusDiv = document.getElementById('lsae-status');
  function setStatus(key, value) { statusDiv.setAttribute('data-' + key, String(value)); }
  var TOP = 8; // nearest texts shown

  function fromBase64(s) {
    var bin = atob(s), out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; ++i) out[i] = bin.charCodeAt(i);
    return out;
  }

  // IEEE half to float: sign, 5-bit exponent (bias 15), 10-bit fraction
  function halfToFloat(h) {
    var sign = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff;
    if (e === 0) return sign * f * Math.pow(2, -24);
    if (e === 31) return f ? NaN : sign * Infinity;
    return sign * (1 + f / 1024) * Math.pow(2, e - 15);
  }

  // The module is built for WASI but without files (LSAE_NO_STDIO): the
  // only calls it can make are an assertion's message to stderr and the
  // stdio plumbing behind it.
  function wasiImports(memory) {
    return {
      wasi_snapshot_preview1: {
        fd_write: function (fd, iovs, count, written) {
          var view = new DataView(memory().buffer), text = '', total = 0;
          for (var i = 0; i < count; ++i) {
            var ptr = view.getUint32(iovs + 8 * i, true), len = view.getUint32(iovs + 8 * i + 4, true);
            text += new TextDecoder().decode(new Uint8Array(memory().buffer, ptr, len));
            total += len;
          }
          view.setUint32(written, total, true);
          console.error('latentsae.wasm (fd ' + fd + '): ' + text);
          return 0;
        },
        fd_seek: function () { return 70; }, // ESPIPE: nothing to seek
        fd_close: function () { return 0; },
        proc_exit: function (code) { throw new Error('latentsae.wasm exited with status ' + code); }
      }
    };
  }

  async function main() {
    var B = window.LSAE_BUNDLE;
    if (!B) throw new Error('bundle.js is missing: run make wasm-page, then open examples/web/index.html');
    var memory = null;
    var result = await WebAssembly.instantiate(fromBase64(B.wasm), wasiImports(function () { return memory; }));
    var api = result.instance.exports;
    memory = api.memory;
    api._initialize();

    function cString(ptr) {
      var bytes = new Uint8Array(memory.buffer, ptr), n = 0;
      while (bytes[n]) ++n;
      return new TextDecoder().decode(bytes.subarray(0, n));
    }
    function check(rc, what) {
      if (rc !== 0) throw new Error(what + ': ' + cString(api.web_last_error()));
    }
    // typed arrays over the module's memory, made afresh at each use: a
    // malloc that grows the memory detaches the old ones
    function alloc(bytes) {
      var p = api.web_alloc(bytes);
      if (!p) throw new Error('out of memory for ' + bytes + ' bytes');
      return p;
    }
    function f32(ptr, n) { return new Float32Array(memory.buffer, ptr, n); }
    function i32(ptr, n) { return new Int32Array(memory.buffer, ptr, n); }

    // ---- the model: cfg.json, then sae.safetensors (docs/files.md)
    var cfg = JSON.parse(B.cfg);
    var d = cfg.d_in, L = cfg.num_latents || cfg.d_in * cfg.expansion_factor, k = cfg.k;
    var st = fromBase64(B.safetensors);
    var hlen = Number(new DataView(st.buffer).getBigUint64(0, true));
    var header = JSON.parse(new TextDecoder().decode(st.subarray(8, 8 + hlen)));
    function tensor(name, shape) {
      var t = header[name];
      if (!t) throw new Error('sae.safetensors has no ' + name);
      if (t.dtype !== 'F32' || JSON.stringify(t.shape) !== JSON.stringify(shape))
        throw new Error(name + ' is ' + t.dtype + ' ' + JSON.stringify(t.shape) + ', want F32 ' + JSON.stringify(shape));
      var bytes = st.subarray(8 + hlen + t.data_offsets[0], 8 + hlen + t.data_offsets[1]);
      var p = alloc(bytes.length);
      new Uint8Array(memory.buffer, p, bytes.length).set(bytes);
      return p;
    }
    var model = api.web_model_create(d, L, k);
    if (!model) throw new Error('web_model_create: ' + cString(api.web_last_error()));
    var W = [tensor('encoder.weight', [L, d]), tensor('encoder.bias', [L]), tensor('W_dec', [L, d]), tensor('b_dec', [d])];
    check(api.web_model_set_weights(model, W[0], W[1], W[2], W[3]), 'web_model_set_weights');
    W.forEach(function (p) { api.web_free(p); });

    // ---- the bundled texts and their embeddings, as float32 in the module
    var n = B.rows, raw = fromBase64(B.embeddings), E = alloc(n * d * 4), e = f32(E, n * d);
    if (B.d !== d) throw new Error('the texts are embedded in ' + B.d + ' dimensions, the model takes ' + d);
    var rawView = new DataView(raw.buffer);
    for (var i = 0; i < n * d; ++i) e[i] = B.dtype === 'f16' ? halfToFloat(rawView.getUint16(2 * i, true)) : rawView.getFloat32(4 * i, true);

    // every text encoded once: its latents, and each latent's label (the
    // text it is most active on)
    var acts = alloc(n * k * 4), idx = alloc(n * k * 4);
    check(api.web_encode(model, E, n, k, acts, idx), 'web_encode');
    var A = Float32Array.from(f32(acts, n * k)), I = Int32Array.from(i32(idx, n * k));
    var best = new Float32Array(L), bestRow = new Int32Array(L).fill(-1);
    for (i = 0; i < n * k; ++i)
      if (A[i] > best[I[i]]) { best[I[i]] = A[i]; bestRow[I[i]] = Math.floor(i / k); }
    var labelled = 0;
    for (i = 0; i < L; ++i) labelled += bestRow[i] >= 0;
    document.getElementById('model-info').textContent = 'Model: ' + L + ' latents over ' + d + '-dimensional embeddings, top ' + k +
      ' active; ' + n + ' bundled texts (' + labelled + ' latents are active on at least one).';

    // ---- the page
    var select = document.getElementById('query'), latentsList = document.getElementById('latents');
    var resultsList = document.getElementById('results'), fidelity = document.getElementById('fidelity');
    for (i = 0; i < Math.min(n, 300); ++i) {
      var opt = document.createElement('option');
      opt.value = String(i);
      opt.textContent = i + ': ' + B.texts[i];
      select.appendChild(opt);
    }
    var one = alloc(k * 4), oneIdx = alloc(k * 4), xhat = alloc(d * 4), rows = alloc(TOP * 4), sims = alloc(TOP * 4);

    function showLatents() {
      var r = Number(select.value);
      latentsList.textContent = '';
      for (var j = 0; j < k; ++j) {
        var li = document.createElement('li'), box = document.createElement('input'), label = document.createElement('label');
        box.type = 'checkbox';
        box.checked = A[r * k + j] > 0;
        box.dataset.slot = String(j);
        box.addEventListener('change', decodeChosen);
        label.appendChild(box);
        var act = document.createElement('span');
        act.className = 'act';
        act.textContent = '#' + I[r * k + j] + ' ' + A[r * k + j].toFixed(3);
        label.appendChild(act);
        var text = document.createElement('span');
        text.className = 'label';
        var br = bestRow[I[r * k + j]];
        text.textContent = br >= 0 ? B.texts[br] : '(not active on any bundled text)';
        label.appendChild(text);
        li.appendChild(label);
        latentsList.appendChild(li);
      }
      decodeChosen();
    }

    // the chosen latents' sum decoded: x_hat = sum_j a_j W_dec[i_j] + b_dec
    // (web_decode with the others' activations set to zero), then the
    // bundled texts nearest to it
    function decodeChosen() {
      var r = Number(select.value), a = f32(one, k), ix = i32(oneIdx, k), chosen = 0;
      latentsList.querySelectorAll('input').forEach(function (box) {
        var j = Number(box.dataset.slot);
        a[j] = box.checked ? A[r * k + j] : 0;
        ix[j] = I[r * k + j];
        chosen += box.checked;
      });
      resultsList.textContent = '';
      setStatus('chosen', chosen);
      if (!chosen) {
        fidelity.textContent = 'No latent chosen: their sum is zero, and only the decoder bias is left.';
        setStatus('results', 0);
        return;
      }
      check(api.web_decode(model, one, oneIdx, 1, k, xhat), 'web_decode');
      var found = api.web_nearest(xhat, E, n, d, TOP, rows, sims);
      if (found < 0) throw new Error('web_nearest: the decoded vector is zero');
      var x = f32(xhat, d), q = f32(E + r * d * 4, d), dot = 0, xx = 0, qq = 0;
      for (var j = 0; j < d; ++j) { dot += x[j] * q[j]; xx += x[j] * x[j]; qq += q[j] * q[j]; }
      fidelity.textContent = chosen + ' of ' + k + ' latents decoded; cosine with the text\'s own embedding: ' +
        (dot / Math.sqrt(xx * qq)).toFixed(3);
      var R = i32(rows, found), S = f32(sims, found), firsts = [];
      for (j = 0; j < found; ++j) {
        var li = document.createElement('li'), sim = document.createElement('span');
        sim.className = 'sim';
        sim.textContent = S[j].toFixed(3);
        li.appendChild(sim);
        li.appendChild(document.createTextNode(B.texts[R[j]] + (R[j] === r ? '  (the text itself)' : '')));
        li.dataset.row = String(R[j]);
        resultsList.appendChild(li);
        firsts.push(R[j]);
      }
      setStatus('results', found);
      setStatus('result-rows', firsts.join(','));
    }

    select.addEventListener('change', showLatents);
    document.getElementById('all').addEventListener('click', function () {
      latentsList.querySelectorAll('input').forEach(function (b) { b.checked = true; });
      decodeChosen();
    });
    document.getElementById('none').addEventListener('click', function () {
      latentsList.querySelectorAll('input').forEach(function (b) { b.checked = false; });
      decodeChosen();
    });
    select.value = '0';
    showLatents();

    if (location.hash === '#selftest') {
      // what tests/test_web.py compares with the native build: the top
      // latents of the first three texts, and what the page showed
      var tops = [], topActs = [];
      for (i = 0; i < 3 * k; ++i) { tops.push(I[i]); topActs.push(A[i].toPrecision(9)); }
      setStatus('top-indices', tops.join(','));
      setStatus('top-acts', topActs.join(','));
      setStatus('latents', latentsList.querySelectorAll('input').length);
      setStatus('all-results', resultsList.children.length);
      setStatus('all-first', resultsList.children.length ? resultsList.children[0].dataset.row : '');
      // one latent only: the first; then none; then text 1
      latentsList.querySelectorAll('input').forEach(function (b, j) { b.checked = j === 0; });
      decodeChosen();
      setStatus('one-results', resultsList.children.length);
      setStatus('one-rows', statusDiv.getAttribute('data-result-rows'));
      document.getElementById('none').click();
      setStatus('none-results', resultsList.children.length);
      select.value = '1';
      select.dispatchEvent(new Event('change'));
      setStatus('other-first', resultsList.children.length ? resultsList.children[0].dataset.row : '');
    }
  }

  main().catch(function (err) {
    console.error(err && err.stack ? err.stack : String(err));
  }).finally(function () {
    var errs = window.lsaeErrors || [];
    document.getElementById('lsae-errors').textContent = errs.join('\n');
    setStatus('errors', errs.length);
    setStatus('ready', 1);
  });
})();
