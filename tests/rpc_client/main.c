/* A client of examples/rpc_calc/calc.x, on top of the stubs rpcgen generates from it
 * (calc.h, calc_clnt.c, calc_xdr.c, made by the test). Finds the server through rpcbind.
 *
 *   client HOST udp|tcp A B TEXT
 *
 * prints "add=A+B", "echo=TEXT" and "count=N", one per line; exits 1 on an RPC error. */
#include <stdio.h>
#include <stdlib.h>
#include <rpc/rpc.h>
#include "calc.h"

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s HOST udp|tcp A B TEXT\n", argv[0]);
        return 2;
    }
    CLIENT *clnt = clnt_create(argv[1], CALC_PROG, CALC_VERS, argv[2]);
    if (clnt == NULL) {
        clnt_pcreateerror(argv[1]);
        return 1;
    }
    struct timeval tv = {5, 0};
    clnt_control(clnt, CLSET_TIMEOUT, (char *)&tv);

    pair p = {atoi(argv[3]), atoi(argv[4])};
    int *sum = calc_add_1(&p, clnt);
    if (sum == NULL) {
        clnt_perror(clnt, "CALC_ADD");
        return 1;
    }
    printf("add=%d\n", *sum);

    text t = argv[5];
    text *echoed = calc_echo_1(&t, clnt);
    if (echoed == NULL) {
        clnt_perror(clnt, "CALC_ECHO");
        return 1;
    }
    printf("echo=%s\n", *echoed);

    u_quad_t *count = calc_count_1(NULL, clnt);
    if (count == NULL) {
        clnt_perror(clnt, "CALC_COUNT");
        return 1;
    }
    printf("count=%llu\n", (unsigned long long)*count);
    clnt_destroy(clnt);
    return 0;
}
