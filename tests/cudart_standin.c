/* A stand-in for libcudart.so with the CUDA runtime's C signatures (cuda_runtime_api.h), for
 * tests/test_cuda_mem.py: "device" memory is host memory, streams are counters, and a few
 * standin_* functions let a test fail a call, read what is still held and set the version.
 * Built by the test with the system C compiler; never shipped. */
#include <stdlib.h>
#include <string.h>

static int live_device, live_pinned, live_streams, last_flags = -1, copies, version = 12060;
static char fail_name[64];
static int fail_err;

static int fails(const char *name) {
    if (fail_err && strcmp(name, fail_name) == 0) { int e = fail_err; fail_err = 0; return e; }
    return 0;
}
void standin_fail(const char *name, int err) { strncpy(fail_name, name, 63); fail_err = err; }
void standin_set_version(int v) { version = v; }
static int live_events;
static float event_ms = 0.5f;
void standin_set_event_ms(float ms) { event_ms = ms; }
int standin_live(int which) { return which == 0 ? live_device : which == 1 ? live_pinned : which == 2 ? live_streams : which == 3 ? last_flags : which == 4 ? copies : live_events; }

int cudaSetDevice(int device) { int e = fails("cudaSetDevice"); if (e) return e; return device == 0 ? 0 : 101; }
int cudaMalloc(void **p, size_t n) { int e = fails("cudaMalloc"); if (e) return e; *p = malloc(n); live_device++; return 0; }
int cudaFree(void *p) { int e = fails("cudaFree"); free(p); live_device--; return e; }
int cudaMallocHost(void **p, size_t n) { int e = fails("cudaMallocHost"); if (e) return e; *p = malloc(n); live_pinned++; return 0; }
int cudaFreeHost(void *p) { free(p); live_pinned--; return 0; }
int cudaStreamCreateWithFlags(void **s, unsigned int flags) { *s = malloc(1); live_streams++; last_flags = (int)flags; return 0; }
int cudaStreamDestroy(void *s) { free(s); live_streams--; return 0; }
int cudaStreamSynchronize(void *s) { return s ? 0 : 400; }
int cudaMemcpyAsync(void *dst, const void *src, size_t n, int kind, void *s) {
    if (!s || (kind != 1 && kind != 2)) return 1;
    memcpy(dst, src, n); copies++; return 0;
}
const char *cudaGetErrorName(int e) {
    switch (e) { case 0: return "cudaSuccess"; case 1: return "cudaErrorInvalidValue"; case 2: return "cudaErrorMemoryAllocation";
                 case 35: return "cudaErrorInsufficientDriver"; default: return "cudaErrorUnknown"; }
}
int cudaRuntimeGetVersion(int *v) { *v = version; return 0; }
int cudaDeviceGetAttribute(int *v, int attr, int device) { *v = attr == 75 ? 8 : attr == 76 ? 7 : 0; return 0; }
int cudaGetDeviceProperties(void *prop, int device) { memset(prop, 0, 1024); strcpy((char *)prop, "Orin (stand-in)"); return 0; }
/* CUDA events: every elapsed time is event_ms (standin_set_event_ms) */
int cudaEventCreate(void **e) { int err = fails("cudaEventCreate"); if (err) return err; *e = malloc(1); live_events++; return 0; }
int cudaEventRecord(void *e, void *s) { return e && s ? 0 : 400; }
int cudaEventSynchronize(void *e) { return e ? 0 : 400; }
int cudaEventElapsedTime(float *ms, void *a, void *b) { if (!a || !b) return 400; *ms = event_ms; return 0; }
int cudaEventDestroy(void *e) { free(e); live_events--; return 0; }
