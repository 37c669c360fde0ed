/* options.c - the command line: flags into their variables, and --help.
   Part of lsae's one translation unit: included by main.c, not compiled alone. */

/* Print `text` wrapped to 79 columns, continuation lines indented by `indent`. */
static void wrap(FILE *f, const char *text, int col, int indent)
{
    const char *p = text;
    int first = 1; /* the first word follows what is already on the line */
    while (*p) {
        const char *w = p;
        int len;
        while (*w && *w != ' ') ++w;
        len = (int)(w - p);
        if (!first && col + 1 + len > 79) {
            fprintf(f, "\n%*s", indent, "");
            col = indent;
        } else if (!first) {
            fputc(' ', f);
            ++col;
        }
        first = 0;
        fwrite(p, 1, (size_t)len, f);
        col += len;
        p = w;
        while (*p == ' ') ++p;
    }
    fputc('\n', f);
}

static void print_help(const char *usage, const char *about, const opt *o, size_t n)
{
    size_t i;
    printf("usage: %s\n\n", usage);
    wrap(stdout, about, 0, 0);
    for (i = 0; i < n; ++i) {
        char left[96], help[1024];
        int col;
        if (o[i].group) {
            printf("\n%s:\n", o[i].group);
            continue;
        }
        snprintf(left, sizeof left, "  %s%s%s%s%s", o[i].alias ? o[i].alias : "", o[i].alias ? ", " : "", o[i].name,
                 o[i].meta ? " " : "", o[i].meta ? o[i].meta : "");
        col = printf("%s", left);
        if (col < 30) printf("%*s", 30 - col, "");
        else printf("\n%30s", "");
        snprintf(help, sizeof help, "%s%s%s%s", o[i].help, o[i].def ? " (default: " : "", o[i].def ? o[i].def : "", o[i].def ? ")" : "");
        wrap(stdout, help, 30, 30);
    }
    printf("\n  -h, --help                  this text\n");
}

static void parse_value(opt *o, const char *v)
{
    char *end = NULL;
    errno = 0;
    switch (o->kind) {
    case O_U64: {
        unsigned long long x;
        if (!*v || *v == '-' || isspace((unsigned char)*v)) usage_fail("%s expects a whole number >= 0, got '%s'", o->name, v);
        x = strtoull(v, &end, 10);
        if (*end || errno) usage_fail("%s expects a whole number >= 0, got '%s'", o->name, v);
        *(uint64_t *)o->dst = (uint64_t)x;
        break;
    }
    case O_INT: {
        long x = strtol(v, &end, 10);
        if (!*v || *end || errno || x < INT_MIN || x > INT_MAX) usage_fail("%s expects a whole number, got '%s'", o->name, v);
        *(int *)o->dst = (int)x;
        break;
    }
    case O_DBL: {
        double x = strtod(v, &end);
        if (!*v || *end || !isfinite(x)) usage_fail("%s expects a number, got '%s'", o->name, v);
        *(double *)o->dst = x;
        break;
    }
    case O_STR:
        *(const char **)o->dst = v;
        break;
    }
}

/* Parse argv (after the command word) into the table and up to maxpos
   positional arguments; returns how many positionals there were. */
static int parse_args(int argc, char **argv, opt *o, size_t n, const char *usage, const char *about, char **pos, int maxpos)
{
    int i, np = 0, only_pos = 0;
    for (i = 0; i < argc; ++i) {
        const char *a = argv[i], *eq, *val = NULL;
        char flag[64];
        size_t j, len;
        opt *hit = NULL;
        if (only_pos || a[0] != '-' || a[1] == 0) {
            if (np >= maxpos) usage_fail("unexpected argument '%s'", a);
            pos[np++] = argv[i];
            continue;
        }
        if (!strcmp(a, "--")) { only_pos = 1; continue; }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            print_help(usage, about, o, n);
            exit(0);
        }
        eq = strchr(a, '=');
        len = eq ? (size_t)(eq - a) : strlen(a);
        if (len < sizeof flag) {
            /* --batch_size is --batch-size: latent-sae's newer scripts spell flags with underscores */
            memcpy(flag, a, len);
            flag[len] = 0;
            for (j = 2; j < len; ++j)
                if (flag[j] == '_') flag[j] = '-';
            for (j = 0; j < n; ++j) {
                if (!o[j].name) continue;
                if (!strcmp(o[j].name, flag) || (o[j].alias && !strcmp(o[j].alias, flag))) { hit = &o[j]; break; }
            }
        }
        if (!hit) usage_fail("unknown option '%.*s'", (int)len, a);
        if (hit->kind == O_FLAG) {
            if (eq) usage_fail("%s takes no value", hit->name);
            *(int *)hit->dst = 1;
        } else {
            if (eq) val = eq + 1;
            else if (i + 1 < argc) val = argv[++i];
            else usage_fail("%s needs a value (%s)", hit->name, hit->meta ? hit->meta : "a value");
            parse_value(hit, val);
        }
        hit->seen = 1;
    }
    return np;
}

static int opt_seen(const opt *o, size_t n, const char *name)
{
    size_t i;
    for (i = 0; i < n; ++i)
        if (o[i].name && !strcmp(o[i].name, name)) return o[i].seen;
    return 0;
}
