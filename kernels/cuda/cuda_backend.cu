/*
 * The CUDA backend's frame: open and destroy, memory, copies, the two streams, events and
 * the sticky error.  The operations live in cuda_matmul.cu, cuda_attention.cu and
 * cuda_ops.cu.
 *
 * Queued work cannot return an error, so every failure an operation meets is kept as the
 * backend's first error (cuda__fail) and handed back, with its message, by the next sync,
 * which waits for both streams and then clears it.  Calls that return int (memory, copies,
 * events) report their own failures at once and leave the sticky error alone.
 *
 * Scratch (quantised activations, attention partials) grows on demand and never shrinks.
 * Growing first waits for the compute stream, because kernels queued earlier may still read
 * the old buffer; it happens a handful of times in a process's life, so one wait is cheaper
 * than reasoning about stream-ordered frees.
 *
 * An event is the cudaEvent_t itself behind the opaque kern_event pointer: there is nothing
 * else to keep, so there is nothing to allocate or leak.
 */
#include "kernels/cuda/cuda_internal.h"

extern "C" {
#include "kernels/cuda/cuda.h"
}

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- errors ---------------------------------------------------------------------------- */

int cuda__errno(cudaError_t rc)
{
    (void)cudaGetLastError();
    switch (rc) {
    case cudaSuccess:
        return 0;
    case cudaErrorMemoryAllocation:
        return -ENOMEM;
    case cudaErrorInvalidValue:
        return -EINVAL;
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorNoKernelImageForDevice:
        return -ENODEV;
    default:
        return -EIO;
    }
}

void cuda__fail(cuda_backend *cb, int rc, const char *fmt, ...)
{
    if (cb->error) return;
    cb->error = rc;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cb->message, sizeof cb->message, fmt, ap);
    va_end(ap);
}

bool cuda__ok(cuda_backend *cb, cudaError_t rc, const char *op, const char *call)
{
    if (rc == cudaSuccess) return true;
    cuda__fail(cb, cuda__errno(rc), "cuda %s: %s: %s: %s", op, call, cudaGetErrorName(rc),
               cudaGetErrorString(rc));
    return false;
}

bool cuda__enter(cuda_backend *cb, const char *op)
{
    cb->act_of.x = NULL;
    return cuda__ok(cb, cudaSetDevice(cb->device), op, "cudaSetDevice");
}

bool cuda__launched(cuda_backend *cb, const char *op)
{
    return cuda__ok(cb, cudaGetLastError(), op, "kernel launch");
}

void *cuda__scratch_get(cuda_backend *cb, cuda__scratch *s, size_t bytes, const char *op)
{
    if (bytes <= s->bytes) return s->ptr;
    if (cb->capturing) {
        cuda__fail(cb, -EAGAIN, "cuda %s: its scratch cannot grow while a graph is captured", op);
        return NULL;
    }
    cb->scratch_gen++;
    /* Grow by half again at least, so that a slowly growing batch does not wait each time. */
    size_t want = s->bytes + s->bytes / 2;
    if (want < bytes) want = bytes;
    want = (want + ((size_t)1 << 20) - 1) & ~(((size_t)1 << 20) - 1);
    if (!cuda__ok(cb, cudaStreamSynchronize(cuda__compute(cb)), op, "cudaStreamSynchronize"))
        return NULL;
    if (s->ptr && !cuda__ok(cb, cudaFree(s->ptr), op, "cudaFree (scratch)")) return NULL;
    s->ptr = NULL;
    s->bytes = 0;
    void *p = NULL;
    cudaError_t rc = cudaMalloc(&p, want);
    if (rc != cudaSuccess) {
        cuda__fail(cb, cuda__errno(rc), "cuda %s: no device memory for %zu bytes of scratch: %s",
                   op, want, cudaGetErrorString(rc));
        return NULL;
    }
    s->ptr = p;
    s->bytes = want;
    return p;
}

/* ---- memory ---------------------------------------------------------------------------- */

static int cuda_alloc(kern_backend *b, kern_mem kind, size_t bytes, void **out)
{
    cuda_backend *cb = cuda__of(b);
    *out = NULL;
    if (bytes == 0) bytes = 1; /* a distinct pointer, as malloc(0) may not give */
    if (kind == KERN_MEM_HOST) {
        *out = malloc(bytes);
        return *out ? 0 : -ENOMEM;
    }
    cudaError_t rc = cudaSetDevice(cb->device);
    if (rc == cudaSuccess) {
        if (kind == KERN_MEM_DEVICE)
            rc = cudaMalloc(out, bytes);
        else if (kind == KERN_MEM_HOST_PINNED)
            rc = cudaMallocHost(out, bytes);
        else
            return -EINVAL;
    }
    if (rc != cudaSuccess) {
        *out = NULL;
        return cuda__errno(rc);
    }
    return 0;
}

static void cuda_free(kern_backend *b, kern_mem kind, void *p)
{
    cuda_backend *cb = cuda__of(b);
    if (!p) return;
    if (kind == KERN_MEM_HOST) {
        free(p);
        return;
    }
    if (!cuda__enter(cb, "free")) return;
    if (kind == KERN_MEM_DEVICE)
        cuda__ok(cb, cudaFree(p), "free", "cudaFree");
    else if (kind == KERN_MEM_HOST_PINNED)
        cuda__ok(cb, cudaFreeHost(p), "free", "cudaFreeHost");
}

static int cuda_register_host(kern_backend *b, void *p, size_t bytes)
{
    cuda_backend *cb = cuda__of(b);
    if (!p || bytes == 0) return -EINVAL;
    cudaError_t rc = cudaSetDevice(cb->device);
    if (rc == cudaSuccess) rc = cudaHostRegister(p, bytes, cudaHostRegisterDefault);
    if (rc == cudaSuccess) return 0;
    /* cudaHostRegister registers all of the range or none of it. */
    int err = cuda__errno(rc);
    return err == -ENOMEM ? -ENOMEM : -EIO;
}

static void cuda_unregister_host(kern_backend *b, void *p)
{
    cuda_backend *cb = cuda__of(b);
    if (!p || !cuda__enter(cb, "unregister_host")) return;
    cuda__ok(cb, cudaHostUnregister(p), "unregister_host", "cudaHostUnregister");
}

static int cuda_mem_info(kern_backend *b, size_t *free_bytes, size_t *total_bytes)
{
    cuda_backend *cb = cuda__of(b);
    size_t f = 0, t = 0;
    cudaError_t rc = cudaSetDevice(cb->device);
    if (rc == cudaSuccess) rc = cudaMemGetInfo(&f, &t);
    if (rc != cudaSuccess) return cuda__errno(rc);
    if (free_bytes) *free_bytes = f;
    if (total_bytes) *total_bytes = t;
    return 0;
}

/* ---- copies and events ----------------------------------------------------------------- */

static int cuda_copy(kern_backend *b, kern_stream s, void *dst, const void *src, size_t bytes,
                     kern_copy_dir dir)
{
    cuda_backend *cb = cuda__of(b);
    if ((unsigned)s >= KERN_STREAM_COUNT) return -EINVAL;
    if (bytes == 0) return 0;
    if (!dst || !src) return -EINVAL;
    cudaMemcpyKind kind;
    switch (dir) {
    case KERN_COPY_TO_DEVICE:
        kind = cudaMemcpyHostToDevice;
        break;
    case KERN_COPY_TO_HOST:
        kind = cudaMemcpyDeviceToHost;
        break;
    case KERN_COPY_ON_DEVICE:
        kind = cudaMemcpyDeviceToDevice;
        break;
    default:
        return -EINVAL;
    }
    cb->act_of.x = NULL;
    cudaError_t rc = cudaSetDevice(cb->device);
    if (rc == cudaSuccess) rc = cudaMemcpyAsync(dst, src, bytes, kind, cb->streams[s]);
    return rc == cudaSuccess ? 0 : cuda__errno(rc);
}

static cudaEvent_t as_cuda_event(kern_event *e)
{
    return reinterpret_cast<cudaEvent_t>(e);
}

static int cuda_event_create(kern_backend *b, kern_event **out)
{
    cuda_backend *cb = cuda__of(b);
    *out = NULL;
    cudaEvent_t ev = NULL;
    cudaError_t rc = cudaSetDevice(cb->device);
    if (rc == cudaSuccess) rc = cudaEventCreateWithFlags(&ev, cudaEventDisableTiming);
    if (rc != cudaSuccess) return cuda__errno(rc);
    *out = reinterpret_cast<kern_event *>(ev);
    return 0;
}

static void cuda_event_destroy(kern_backend *b, kern_event *e)
{
    cuda_backend *cb = cuda__of(b);
    if (!e || !cuda__enter(cb, "event_destroy")) return;
    cuda__ok(cb, cudaEventDestroy(as_cuda_event(e)), "event_destroy", "cudaEventDestroy");
}

static int cuda_event_record(kern_backend *b, kern_event *e, kern_stream s)
{
    cuda_backend *cb = cuda__of(b);
    if (!e || (unsigned)s >= KERN_STREAM_COUNT) return -EINVAL;
    cudaError_t rc = cudaSetDevice(cb->device);
    if (rc == cudaSuccess) rc = cudaEventRecord(as_cuda_event(e), cb->streams[s]);
    return rc == cudaSuccess ? 0 : cuda__errno(rc);
}

static int cuda_event_query(kern_backend *b, kern_event *e)
{
    cuda_backend *cb = cuda__of(b);
    if (!e) return -EINVAL;
    cudaError_t rc = cudaSetDevice(cb->device);
    if (rc != cudaSuccess) return cuda__errno(rc);
    rc = cudaEventQuery(as_cuda_event(e));
    if (rc == cudaSuccess) return 1;
    if (rc == cudaErrorNotReady) {
        (void)cudaGetLastError(); /* "not ready" is an answer, not a failure to keep */
        return 0;
    }
    return cuda__errno(rc);
}

static int cuda_event_wait(kern_backend *b, kern_event *e)
{
    cuda_backend *cb = cuda__of(b);
    if (!e) return -EINVAL;
    cudaError_t rc = cudaSetDevice(cb->device);
    if (rc == cudaSuccess) rc = cudaEventSynchronize(as_cuda_event(e));
    return rc == cudaSuccess ? 0 : cuda__errno(rc);
}

static int cuda_stream_wait(kern_backend *b, kern_stream s, kern_event *e)
{
    cuda_backend *cb = cuda__of(b);
    if (!e || (unsigned)s >= KERN_STREAM_COUNT) return -EINVAL;
    cudaError_t rc = cudaSetDevice(cb->device);
    if (rc == cudaSuccess) rc = cudaStreamWaitEvent(cb->streams[s], as_cuda_event(e), 0);
    return rc == cudaSuccess ? 0 : cuda__errno(rc);
}

/* ---- sync ------------------------------------------------------------------------------ */

static const char *const fault_text[CUDA__FAULT_COUNT] = {
    "a token's (seq, pos) lies outside the KV cache",
    "a token's KV block was never reserved",
    "get_rows: an id lies outside the weight's rows",
    "gather / moe_combine: a negative row index",
    "moe_align: an expert id outside the router's experts",
};

static void write_err(char *err, size_t err_size, const char *text)
{
    if (err && err_size) snprintf(err, err_size, "%s", text);
}

static int cuda_sync(kern_backend *b, char *err, size_t err_size)
{
    cuda_backend *cb = cuda__of(b);
    int rc = 0;
    char msg[sizeof cb->message] = "";
    cudaError_t e = cudaSetDevice(cb->device);
    for (int s = 0; s < KERN_STREAM_COUNT && e == cudaSuccess; s++)
        e = cudaStreamSynchronize(cb->streams[s]);
    if (e != cudaSuccess) {
        rc = cuda__errno(e);
        snprintf(msg, sizeof msg, "cuda sync: %s: %s", cudaGetErrorName(e), cudaGetErrorString(e));
    }
    if (cb->prof.n) cuda__profile_collect(cb);
    /* Both streams are idle, so every fault bit a kernel will raise is in place. */
    unsigned fault = *(volatile unsigned *)cb->fault;
    if (fault) {
        *(volatile unsigned *)cb->fault = 0;
        /* from the last bit down: a bad expert id (moe_align) leaves rows the gather and the
         * combine behind it then fault on, and the cause is the one to name */
        for (int i = CUDA__FAULT_COUNT - 1; i >= 0; i--)
            if (fault & (1u << i)) {
                cuda__fail(cb, -EINVAL, "cuda: %s (the row was skipped)", fault_text[i]);
                break;
            }
    }
    /* The kept error happened before the sync's own, so it is the one to report. */
    if (cb->error) {
        rc = cb->error;
        snprintf(msg, sizeof msg, "%s", cb->message);
        cb->error = 0;
        cb->message[0] = '\0';
    }
    write_err(err, err_size, msg);
    return rc;
}

/* ---- graphs ---------------------------------------------------------------------------- */

/* A captured step: instantiated once, launched as one unit (one host call where the step
 * queued a few hundred kernels), valid while the scratch it was captured with stays put. */
struct kern_graph {
    cudaGraphExec_t exec;
    uint64_t scratch_gen;
};

static int cuda_capture_begin(kern_backend *b)
{
    cuda_backend *cb = cuda__of(b);
    cb->act_of.x = NULL;
    if (cb->capturing) return -EBUSY;
    if (cb->error) return cb->error; /* a failure to report first */
    cudaError_t rc = cudaSetDevice(cb->device);
    if (rc == cudaSuccess)
        rc = cudaStreamBeginCapture(cuda__compute(cb), cudaStreamCaptureModeRelaxed);
    if (rc != cudaSuccess) return cuda__errno(rc);
    cb->capturing = true;
    return 0;
}

static int cuda_capture_end(kern_backend *b, kern_graph **out, char *err, size_t err_size)
{
    cuda_backend *cb = cuda__of(b);
    *out = NULL;
    if (!cb->capturing) {
        snprintf(err, err_size, "cuda: capture_end without capture_begin");
        return -EINVAL;
    }
    cb->capturing = false;
    cb->act_of.x = NULL;
    cudaGraph_t graph = NULL;
    cudaError_t rc = cudaStreamEndCapture(cuda__compute(cb), &graph);
    /* An operation that failed while recording failed the capture, not a step: nothing ran. */
    int failed = cb->error;
    char why[sizeof cb->message];
    snprintf(why, sizeof why, "%s", cb->message);
    cb->error = 0;
    cb->message[0] = '\0';
    if (rc != cudaSuccess || failed) {
        snprintf(err, err_size, "cuda: capturing the step failed: %s",
                 failed ? why : cudaGetErrorString(rc));
        if (graph) (void)cudaGraphDestroy(graph);
        (void)cudaGetLastError();
        return failed ? failed : cuda__errno(rc);
    }
    kern_graph *g = (kern_graph *)calloc(1, sizeof *g);
    if (!g) {
        (void)cudaGraphDestroy(graph);
        snprintf(err, err_size, "cuda: capturing the step: out of memory");
        return -ENOMEM;
    }
    rc = cudaGraphInstantiate(&g->exec, graph, 0);
    (void)cudaGraphDestroy(graph);
    if (rc != cudaSuccess) {
        snprintf(err, err_size, "cuda: cudaGraphInstantiate: %s", cudaGetErrorString(rc));
        free(g);
        return cuda__errno(rc);
    }
    g->scratch_gen = cb->scratch_gen;
    *out = g;
    return 0;
}

static int cuda_graph_launch(kern_backend *b, kern_graph *g)
{
    cuda_backend *cb = cuda__of(b);
    cb->act_of.x = NULL;
    if (g->scratch_gen != cb->scratch_gen) return -ESTALE;
    cudaError_t rc = cudaSetDevice(cb->device);
    if (rc == cudaSuccess) rc = cudaGraphLaunch(g->exec, cuda__compute(cb));
    return rc == cudaSuccess ? 0 : cuda__errno(rc);
}

static void cuda_graph_destroy(kern_backend *b, kern_graph *g)
{
    cuda_backend *cb = cuda__of(b);
    (void)cudaSetDevice(cb->device);
    (void)cudaGraphExecDestroy(g->exec);
    free(g);
}

/* ---- open / destroy -------------------------------------------------------------------- */

static void cuda_destroy(kern_backend *b)
{
    cuda_backend *cb = cuda__of(b);
    /* Teardown keeps going past failures: there is no one left to report them to. */
    (void)cudaSetDevice(cb->device);
    for (int s = 0; s < KERN_STREAM_COUNT; s++)
        if (cb->streams[s]) (void)cudaStreamSynchronize(cb->streams[s]);
    cuda__profile_release(cb);
    if (cb->act.ptr) (void)cudaFree(cb->act.ptr);
    if (cb->partial.ptr) (void)cudaFree(cb->partial.ptr);
    if (cb->moe_up.ptr) (void)cudaFree(cb->moe_up.ptr);
    if (cb->fault) (void)cudaFreeHost(cb->fault);
    for (int s = 0; s < KERN_STREAM_COUNT; s++)
        if (cb->streams[s]) (void)cudaStreamDestroy(cb->streams[s]);
    (void)cudaGetLastError();
    free(cb);
}

extern const kern_ops cuda__ops = {
    cuda_alloc,        cuda_free,         cuda_register_host,   cuda_unregister_host,
    cuda_mem_info,     cuda_copy,         cuda_event_create,    cuda_event_destroy,
    cuda_event_record, cuda_event_query,  cuda_event_wait,      cuda_stream_wait,
    cuda_sync,         cuda__matmul,      cuda__matmul_batched, cuda__rmsnorm,
    cuda__rope,        cuda__kv_store,    cuda__attention,      cuda__silu_mul,
    cuda__swiglu_oai,  cuda__add,         cuda__add_bias,       cuda__get_rows,
    cuda__gather,      cuda__router,      cuda__experts,        cuda__moe_combine,
    cuda__gate_add,    cuda__moe_align,   cuda__experts_routed, cuda_capture_begin,
    cuda_capture_end,  cuda_graph_launch, cuda_graph_destroy,   cuda__set_profiling,
    cuda__get_profile, cuda_destroy,
};

/* The table is positional: an operation added to kern_ops must be added here too. */
static_assert(sizeof cuda__ops == 38 * sizeof(void *), "kern_ops changed: update cuda__ops");

/* Launching it proves the device can run this build's code (its SASS or PTX). */
__global__ void cuda_image_probe(void) {}

extern "C" int kern_cuda_open(kern_backend **out, const kern_open_opts *opts, char *err,
                              size_t err_size)
{
    *out = NULL;
    int device = opts ? opts->device : 0;
    char msg[512];
    int count = 0;
    cudaError_t rc = cudaGetDeviceCount(&count);
    if (rc != cudaSuccess || count == 0) {
        (void)cudaGetLastError();
        snprintf(msg, sizeof msg, "cuda backend: no CUDA device (%s)",
                 rc != cudaSuccess ? cudaGetErrorString(rc) : "the driver reports none");
        write_err(err, err_size, msg);
        return -ENODEV;
    }
    if (device < 0 || device >= count) {
        snprintf(msg, sizeof msg, "cuda backend: no CUDA device %d (%d present)", device, count);
        write_err(err, err_size, msg);
        return -ENODEV;
    }
    cudaDeviceProp prop;
    rc = cudaSetDevice(device);
    if (rc == cudaSuccess) rc = cudaGetDeviceProperties(&prop, device);
    if (rc != cudaSuccess) {
        (void)cudaGetLastError();
        snprintf(msg, sizeof msg, "cuda backend: CUDA device %d unusable (%s)", device,
                 cudaGetErrorString(rc));
        write_err(err, err_size, msg);
        return -ENODEV;
    }
    cudaFuncAttributes attr;
    rc = cudaFuncGetAttributes(&attr, cuda_image_probe);
    if (rc != cudaSuccess) {
        (void)cudaGetLastError();
        snprintf(msg, sizeof msg,
                 "cuda backend: device %d (%s, compute %d.%d) cannot run this build's kernels "
                 "(%s)",
                 device, prop.name, prop.major, prop.minor, cudaGetErrorString(rc));
        write_err(err, err_size, msg);
        return -ENODEV;
    }

    cuda_backend *cb = (cuda_backend *)calloc(1, sizeof *cb);
    if (!cb) {
        write_err(err, err_size, "cuda backend: out of memory");
        return -ENOMEM;
    }
    cb->base.name = "cuda";
    cb->base.kind = KERN_BACKEND_CUDA;
    cb->base.ops = &cuda__ops;
    cb->device = device;
    cb->sm_count = prop.multiProcessorCount;
    const char *step = "cudaStreamCreateWithFlags";
    for (int s = 0; s < KERN_STREAM_COUNT && rc == cudaSuccess; s++)
        rc = cudaStreamCreateWithFlags(&cb->streams[s], cudaStreamNonBlocking);
    if (rc == cudaSuccess) {
        step = "cudaHostAlloc (fault word)";
        rc = cudaHostAlloc((void **)&cb->fault, sizeof *cb->fault, cudaHostAllocMapped);
    }
    if (rc == cudaSuccess) {
        *cb->fault = 0;
        step = "cudaHostGetDevicePointer";
        rc = cudaHostGetDevicePointer((void **)&cb->fault_device, cb->fault, 0);
    }
    if (rc != cudaSuccess) {
        int code = cuda__errno(rc);
        snprintf(msg, sizeof msg, "cuda backend: device %d: %s: %s", device, step,
                 cudaGetErrorString(rc));
        write_err(err, err_size, msg);
        cuda_destroy(&cb->base);
        return code == -ENOMEM ? -ENOMEM : -EIO;
    }
    /* The tensor-core kernel must give the dp4a kernel's bits (batch invariance): it runs only
     * where a check of the two on this device agrees. */
    if (opts && opts->no_tensor_cores) {
        snprintf(cb->matmul_note, sizeof cb->matmul_note,
                 "batches on the dp4a kernel (tensor cores turned off)");
    } else if (prop.major < 8) {
        snprintf(cb->matmul_note, sizeof cb->matmul_note,
                 "batches on the dp4a kernel (no int8 mma before sm_80)");
    } else {
        char why[160] = "";
        const int check = cuda__tensor_core_check(cb, why, sizeof why);
        if (check < 0) {
            snprintf(msg, sizeof msg,
                     "cuda backend: device %d: checking the tensor-core kernel: %s", device, why);
            write_err(err, err_size, msg);
            cuda_destroy(&cb->base);
            return check == -ENOMEM ? -ENOMEM : -EIO;
        }
        cb->tensor_cores = check == 0;
        if (check == 0)
            snprintf(cb->matmul_note, sizeof cb->matmul_note,
                     "batches on the int8 tensor cores (their check at open gave the dp4a "
                     "kernel's bits)");
        else
            snprintf(cb->matmul_note, sizeof cb->matmul_note,
                     "batches on the dp4a kernel: the tensor-core kernel failed its check at open "
                     "(%s)",
                     why);
    }
    *out = &cb->base;
    return 0;
}

extern "C" const char *kern_cuda_matmul_note(const kern_backend *b)
{
    return b && b->kind == KERN_BACKEND_CUDA ? ((const cuda_backend *)b)->matmul_note : NULL;
}
