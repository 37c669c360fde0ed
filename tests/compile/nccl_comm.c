/* latentsae_nccl.h in a program: compiled and linked as C99 and as C++11
   by make test-cuda-build (build/cuda-nccl/nccl_comm, nccl_comm_cxx), with
   MPI, the CUDA backend and NCCL, warnings as errors. Without arguments it
   only proves the program loads (no MPI, no GPU needed). Under mpirun with
   --init on a machine with a GPU per rank it sets up the communicator and
   sums a small device buffer (not run by CI: there is no GPU there). */
#include <mpi.h>
#define LATENTSAE_IMPLEMENTATION
#include "../../latentsae.h"
#include "../../latentsae_mpi.h"
#include "../../latentsae_nccl.h"
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    lsae_nccl nc;
    lsae_comm comm;
    float host[5], *dev = NULL;
    int i, bad = 0;
    if (argc < 2 || strcmp(argv[1], "--init") != 0) {
        printf("nccl_comm: loads (run under mpirun with --init on GPUs to sum a buffer)\n");
        return 0;
    }
    MPI_Init(&argc, &argv);
    if (lsae_nccl_init(&nc, MPI_COMM_WORLD, &comm) != LSAE_OK) {
        fprintf(stderr, "nccl_comm: %s\n", nc.err);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    /* rank r holds r + 1 + i at i: the sum is P (P + 1) / 2 + P i, exact */
    for (i = 0; i < 5; ++i) host[i] = (float)(comm.rank + 1 + i);
    if (cudaMalloc((void **)&dev, sizeof host) != cudaSuccess || cudaMemcpy(dev, host, sizeof host, cudaMemcpyHostToDevice) != cudaSuccess ||
        comm.sum_f32_device(comm.ctx, dev, 5, NULL) != LSAE_OK || cudaMemcpy(host, dev, sizeof host, cudaMemcpyDeviceToHost) != cudaSuccess) {
        fprintf(stderr, "nccl_comm: rank %d: the device sum failed: %s\n", comm.rank, nc.err);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    for (i = 0; i < 5; ++i)
        if (host[i] != (float)(comm.size * (comm.size + 1) / 2 + comm.size * i)) bad = 1;
    printf("nccl_comm: rank %d of %d on GPU %d: device sum %s\n", comm.rank, comm.size, nc.device, bad ? "WRONG" : "ok");
    (void)cudaFree(dev);
    lsae_nccl_free(&nc);
    MPI_Finalize();
    return bad;
}
