/* The procedures of examples/rpc_calc/calc.x for the C server rpcgen generates
 * (calc_svc.c: main, dispatch, svc_run; calc_xdr.c), as the rpcgen tutorial writes them.
 * The benchmark builds them with cc against libtirpc. */
#include <rpc/rpc.h>
#include "calc.h"

static u_quad_t served;

int *calc_add_1_svc(pair *argp, struct svc_req *rqstp) {
    static int result;
    (void)rqstp;
    served++;
    result = (int)((unsigned)argp->a + (unsigned)argp->b);
    return &result;
}

text *calc_echo_1_svc(text *argp, struct svc_req *rqstp) {
    static text result;
    (void)rqstp;
    served++;
    result = *argp;
    return &result;
}

u_quad_t *calc_count_1_svc(void *argp, struct svc_req *rqstp) {
    static u_quad_t result;
    (void)argp;
    (void)rqstp;
    result = ++served;
    return &result;
}
