/*
 * knnclass fused ops: onnxruntime custom ops (domain "ai.knnclass") that do, in one pass
 * over a row, the elementwise work around the per-row int8 GEMMs of knnclass/encoders/
 * _rowwise.py, which stock onnxruntime runs as 6-12 separate kernels per GEMM:
 *
 *   RowQuant(X)                          -> Q, S   per-row symmetric uint8 (zero point 128)
 *   ScaleBias(Y, S, B)                   -> Z      Z = Y*S + B
 *   ScaleBiasGeluQuant(Y, S, B)          -> Q, S2  RowQuant(gelu(Y*S + B)), exact (erf) GELU
 *   ScaleBiasAddLayerNorm(Y,S,B,R,G,Be)  -> Z      Z = LayerNorm(Y*S + B + R)
 *   ScaleBiasAddLayerNormQuant(...)      -> Z, Q, S2
 *   Attention(Yq, Yk, Yv, S, Bq, Bk, Bv, M) -> C    softmax(Qh Kh^T / sqrt(D) + M) Vh per head,
 *                                                   Q = Yq*S + Bq (K, V alike)
 *   AttentionQuant(same inputs)          -> Q, S2  RowQuant(C)
 *
 * Yq, Yk, Yv are [B, T, H*D] (heads side by side, as the projections give them), S their
 * shared row scales, M the additive mask bias, [B, 1, 1|T, T]; C is [B, T, H*D], i.e.
 * the heads already merged.
 * Y is the int8 GEMM's output already scaled per column, S the activation row scales.
 *
 * KC_OPS_VERSION (FUSED_OPS_VERSION in _rowwise.py: bump both with any change to an op) is
 * exported as knnclass_fusedops_version(): the loader (onnx.fused_ops_library) compares it
 * with the Python side's and runs the stock graph on a stale build.
 * onnxruntime loads this library through SessionOptions.register_custom_ops_library and
 * calls RegisterCustomOps. Only the few C API entries used here are declared below, by
 * their slot in onnxruntime's OrtApi function table (stable: the table only grows).
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11 /* x86-64-v4 names */
#define KC_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define KC_CLONES
#endif

/* helpers are inlined into each clone, so they get its instruction set */
#define KC_INLINE static inline __attribute__((always_inline))

#if defined(_WIN32)
#define KC_EXPORT __declspec(dllexport)
#else
#define KC_EXPORT __attribute__((visibility("default")))
#endif

/* ---- the part of onnxruntime's C API this library uses ---------------------------- */

typedef struct OrtStatus OrtStatus;
typedef struct OrtValue OrtValue;
typedef struct OrtKernelContext OrtKernelContext;
typedef struct OrtKernelInfo OrtKernelInfo;
typedef struct OrtSessionOptions OrtSessionOptions;
typedef struct OrtCustomOpDomain OrtCustomOpDomain;
typedef struct OrtTensorTypeAndShapeInfo OrtTensorTypeAndShapeInfo;
typedef void *const *OrtApiTable; /* OrtApi: a table of function pointers */

typedef struct OrtApiBase {
    OrtApiTable (*GetApi)(uint32_t version);
    const char *(*GetVersionString)(void);
} OrtApiBase;

#define KC_OPS_VERSION 3

enum { KC_API_VERSION = 17 }; /* API level asked for: KernelContext_ParallelFor (1.17) */
enum { KC_OP_VERSION = 16 };  /* OrtCustomOp layout filled in: through KernelComputeV2 */
enum { ORT_INVALID_ARGUMENT = 2 };
enum { T_FLOAT = 1, T_UINT8 = 2 };

/* slots in OrtApi */
enum {
    S_CreateStatus = 0,
    S_GetTensorMutableData = 51,
    S_GetDimensionsCount = 61,
    S_GetDimensions = 62,
    S_GetTensorTypeAndShape = 65,
    S_KernelInfoGetAttribute_float = 85,
    S_KernelInfoGetAttribute_int64 = 86,
    S_KernelContext_GetInput = 90,
    S_KernelContext_GetOutput = 91,
    S_ReleaseTensorTypeAndShapeInfo = 99,
    S_CreateCustomOpDomain = 26,
    S_CustomOpDomain_Add = 27,
    S_AddCustomOpDomain = 28,
    S_KernelContext_ParallelFor = 274,
};

typedef OrtStatus *(*CreateStatus_t)(int code, const char *msg);
typedef OrtStatus *(*GetTensorMutableData_t)(OrtValue *value, void **out);
typedef OrtStatus *(*GetDimensionsCount_t)(const OrtTensorTypeAndShapeInfo *info, size_t *out);
typedef OrtStatus *(*GetDimensions_t)(const OrtTensorTypeAndShapeInfo *info, int64_t *dims, size_t n);
typedef OrtStatus *(*GetTensorTypeAndShape_t)(const OrtValue *value, OrtTensorTypeAndShapeInfo **out);
typedef OrtStatus *(*KernelInfoGetAttribute_float_t)(const OrtKernelInfo *info, const char *name, float *out);
typedef OrtStatus *(*KernelInfoGetAttribute_int64_t)(const OrtKernelInfo *info, const char *name, int64_t *out);
typedef OrtStatus *(*KernelContext_GetInput_t)(const OrtKernelContext *ctx, size_t i, const OrtValue **out);
typedef OrtStatus *(*KernelContext_GetOutput_t)(OrtKernelContext *ctx, size_t i, const int64_t *dims, size_t n,
                                                OrtValue **out);
typedef void (*ReleaseTensorTypeAndShapeInfo_t)(OrtTensorTypeAndShapeInfo *info);
typedef OrtStatus *(*CreateCustomOpDomain_t)(const char *domain, OrtCustomOpDomain **out);
typedef OrtStatus *(*CustomOpDomain_Add_t)(OrtCustomOpDomain *domain, const void *op);
typedef OrtStatus *(*AddCustomOpDomain_t)(OrtSessionOptions *options, OrtCustomOpDomain *domain);
typedef OrtStatus *(*KernelContext_ParallelFor_t)(const OrtKernelContext *ctx, void (*fn)(void *, size_t), size_t total,
                                                  size_t num_batch, void *usr);

#define API(name) ((name##_t)g_api[S_##name])

/* OrtCustomOp as of version 16 (fields through KernelComputeV2). */
typedef struct KcOp {
    uint32_t version;
    void *(*CreateKernel)(const struct KcOp *op, OrtApiTable api, const OrtKernelInfo *info);
    const char *(*GetName)(const struct KcOp *op);
    const char *(*GetExecutionProviderType)(const struct KcOp *op);
    int (*GetInputType)(const struct KcOp *op, size_t index);
    size_t (*GetInputTypeCount)(const struct KcOp *op);
    int (*GetOutputType)(const struct KcOp *op, size_t index);
    size_t (*GetOutputTypeCount)(const struct KcOp *op);
    void (*KernelCompute)(void *kernel, OrtKernelContext *ctx);
    void (*KernelDestroy)(void *kernel);
    int (*GetInputCharacteristic)(const struct KcOp *op, size_t index);
    int (*GetOutputCharacteristic)(const struct KcOp *op, size_t index);
    int (*GetInputMemoryType)(const struct KcOp *op, size_t index);
    int (*GetVariadicInputMinArity)(const struct KcOp *op);
    int (*GetVariadicInputHomogeneity)(const struct KcOp *op);
    int (*GetVariadicOutputMinArity)(const struct KcOp *op);
    int (*GetVariadicOutputHomogeneity)(const struct KcOp *op);
    OrtStatus *(*CreateKernelV2)(const struct KcOp *op, OrtApiTable api, const OrtKernelInfo *info, void **kernel);
    OrtStatus *(*KernelComputeV2)(void *kernel, OrtKernelContext *ctx);
    /* knnclass's own fields (onnxruntime reads none past KernelComputeV2 at version 16) */
    const char *name;
    int kind;
    int n_in;
    const int *in_types;
    int n_out;
    const int *out_types;
} KcOp;

static OrtApiTable g_api;

/* ---- row kernels -------------------------------------------------------------------- */

static const float kEps = 1e-8f; /* floor on a row's max |x|, as the stock graph */

/* Written so that GCC vectorises them: fminf/fmaxf (NaN rules) and roundevenf do not;
   nearbyintf rounds half to even in the default rounding mode, as QuantizeLinear. */
#define KC_MAX(a, b) ((a) > (b) ? (a) : (b))
#define KC_MIN(a, b) ((a) < (b) ? (a) : (b))

/* Quantise a row whose max |x| is m (floored at kEps). */
KC_CLONES static void quant_with_max(const float *x, int64_t n, float m, uint8_t *q, float *scale) {
    float s = KC_MAX(m, kEps) / 127.0f;
    float inv = 1.0f / s;
#pragma omp simd
    for (int64_t j = 0; j < n; j++) {
        float v = nearbyintf(x[j] * inv) + 128.0f;
        v = KC_MIN(KC_MAX(v, 0.0f), 255.0f);
        q[j] = (uint8_t)(int32_t)v;
    }
    *scale = s;
}

KC_CLONES static void quant_row(const float *x, int64_t n, uint8_t *q, float *scale) {
    float m = kEps;
#pragma omp simd reduction(max : m)
    for (int64_t j = 0; j < n; j++) m = KC_MAX(m, fabsf(x[j]));
    quant_with_max(x, n, m, q, scale);
}

/* exact GELU x/2 (1 + erf(x/sqrt 2)) with erf(z) = 1 - (1 + a1 z + ... + a6 z^6)^-16 for
   z >= 0 (Abramowitz-Stegun 7.1.28, |err| <= 3e-7): no exp, so fewer operations than 7.1.26. */
static inline float gelu(float x) {
    float ax = fabsf(x), z = ax * 0.70710678118654752f;
    float p = 4.30638e-5f * z + 2.765672e-4f;
    p = p * z + 1.520143e-4f;
    p = p * z + 9.2705272e-3f;
    p = p * z + 4.22820123e-2f;
    p = p * z + 7.05230784e-2f;
    p = p * z + 1.0f;
    p = KC_MIN(p, 200.0f); /* p^16 stays finite; erf is 1 in float long before */
    p = p * p;
    p = p * p;
    p = p * p;
    p = p * p;
    return 0.5f * x + 0.5f * ax * (1.0f - 1.0f / p);
}

KC_CLONES static void scale_bias_row(const float *y, float s, const float *b, int64_t n, float *z) {
#pragma omp simd
    for (int64_t j = 0; j < n; j++) z[j] = y[j] * s + b[j];
}

/* tmp = gelu(y s + b); returns max |tmp| (for the quantisation that follows) */
KC_CLONES static float scale_bias_gelu_row(const float *y, float s, const float *b, int64_t n, float *tmp) {
    float m = kEps;
#pragma omp simd reduction(max : m)
    for (int64_t j = 0; j < n; j++) {
        float g = gelu(y[j] * s + b[j]);
        tmp[j] = g;
        m = KC_MAX(m, fabsf(g));
    }
    return m;
}

/* z = LayerNorm(y s + b + r); returns max |z| */
KC_CLONES static float scale_bias_add_ln_row(const float *y, float s, const float *b, const float *r, const float *g,
                                            const float *be, float eps, int64_t n, float *z) {
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t j = 0; j < n; j++) {
        float v = y[j] * s + b[j] + r[j];
        z[j] = v;
        sum += v;
    }
    float mean = sum / (float)n;
    float var = 0.0f;
#pragma omp simd reduction(+ : var)
    for (int64_t j = 0; j < n; j++) {
        float d = z[j] - mean;
        var += d * d;
    }
    float inv = 1.0f / sqrtf(var / (float)n + eps);
    float m = kEps;
#pragma omp simd reduction(max : m)
    for (int64_t j = 0; j < n; j++) {
        z[j] = (z[j] - mean) * inv * g[j] + be[j];
        m = KC_MAX(m, fabsf(z[j]));
    }
    return m;
}

/* GCC/clang vector extensions: 16 floats (one AVX-512 register, two AVX2 ones, ...). */
typedef float kc_v16 __attribute__((vector_size(64)));
typedef int32_t kc_v16i __attribute__((vector_size(64)));
typedef float kc_v16u __attribute__((vector_size(64), aligned(4)));
#define KC_LOAD(p) (*(const kc_v16u *)(p))
#define KC_STORE(p, x) (*(kc_v16u *)(p) = (x))
#define KC_SPLAT(x) ((kc_v16){0} + (x))
KC_INLINE kc_v16 kc_sel(kc_v16i m, kc_v16 a, kc_v16 b) { return (kc_v16)((m & (kc_v16i)a) | (~m & (kc_v16i)b)); }
#if defined(__clang__)
#define KC_SWAP(x, ...) __builtin_shufflevector((x), (x), __VA_ARGS__)
#else
#define KC_SWAP(x, ...) __builtin_shuffle((x), (kc_v16i){__VA_ARGS__})
#endif
/* lane reductions in a fixed order (log-step: halves, quarters, ...) */
KC_INLINE float kc_hsum(kc_v16 x) {
    x += KC_SWAP(x, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
    x += KC_SWAP(x, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11);
    x += KC_SWAP(x, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
    x += KC_SWAP(x, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
    return x[0];
}
KC_INLINE float kc_hmax(kc_v16 x) {
    kc_v16 y = KC_SWAP(x, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
    x = kc_sel(y > x, y, x);
    y = KC_SWAP(x, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11);
    x = kc_sel(y > x, y, x);
    y = KC_SWAP(x, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
    x = kc_sel(y > x, y, x);
    y = KC_SWAP(x, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
    x = kc_sel(y > x, y, x);
    return x[0];
}

/* exp(x), x <= 0, 16 lanes: 2^n p(r); 0 below -80 (2^-126 p would be denormal, slow) */
KC_INLINE kc_v16 kc_exp_neg(kc_v16 x) {
    kc_v16i keep = x >= -80.0f;
    x = kc_sel(keep, x, KC_SPLAT(-80.0f));
    kc_v16 n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round to nearest */
    kc_v16 r = x - n * 0.693359375f + n * 2.12194440e-4f;
    kc_v16 p = r * 1.9875691500e-4f + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    kc_v16i bits = (__builtin_convertvector(n, kc_v16i) + 127) << 23;
    return (kc_v16)((kc_v16i)(p * (kc_v16)bits) & keep);
}

/* out[r] = sum over k < n of w[r*w_row + k] * (16 floats at v + k*v_step), for r < R (<= 4):
   even and odd k in separate registers (FMA latency), in the same order for any R. */
KC_INLINE void dot_rows(int R, const float *w, int64_t w_row, const float *v, int64_t v_step, int64_t n,
                        kc_v16 *out) {
    kc_v16 a[4][2];
    for (int r = 0; r < R; r++) a[r][0] = a[r][1] = KC_SPLAT(0.0f);
    int64_t k = 0;
    for (; k + 2 <= n; k += 2) {
        kc_v16 v0 = KC_LOAD(v + k * v_step), v1 = KC_LOAD(v + (k + 1) * v_step);
        for (int r = 0; r < R; r++) {
            a[r][0] += w[r * w_row + k] * v0;
            a[r][1] += w[r * w_row + k + 1] * v1;
        }
    }
    if (k < n) {
        kc_v16 v0 = KC_LOAD(v + k * v_step);
        for (int r = 0; r < R; r++) a[r][0] += w[r * w_row + k] * v0;
    }
    for (int r = 0; r < R; r++) out[r] = a[r][0] + a[r][1];
}

/* Rows i0 .. i0+R-1 (R <= 4) of one head: scores against all keys, softmax, weighted values.
   kt: D x tp keys (scaled, zero beyond t), vh: t x D values, qh: R x D queries,
   m: mask bias rows (m_step apart), c: output rows `ld` apart. */
KC_INLINE void attend_rows(int R, const float *qh, const float *kt, const float *vh, const float *m, int64_t m_step,
                           int64_t t, int64_t tp, int64_t d, float *p, float *c, int64_t ld) {
    kc_v16 acc[4];
    for (int64_t jb = 0; jb < tp; jb += 16) {
        dot_rows(R, qh, d, kt + jb, tp, d, acc);
        for (int r = 0; r < R; r++) KC_STORE(p + r * tp + jb, acc[r]);
    }
    float inv[4];
    for (int r = 0; r < R; r++) {
        float *pr = p + r * tp;
        const float *mr = m + r * m_step;
        int64_t j = 0;
        for (; j + 16 <= t; j += 16) KC_STORE(pr + j, KC_LOAD(pr + j) + KC_LOAD(mr + j));
        for (; j < t; j++) pr[j] += mr[j];
        for (; j < tp; j++) pr[j] = -3.402823466e38f;
        kc_v16 mx = KC_LOAD(pr);
        for (int64_t jb = 16; jb < tp; jb += 16) {
            kc_v16 x = KC_LOAD(pr + jb);
            mx = kc_sel(x > mx, x, mx);
        }
        float top = kc_hmax(mx);
        kc_v16 sum = KC_SPLAT(0.0f);
        for (int64_t jb = 0; jb < tp; jb += 16) {
            kc_v16 x = kc_exp_neg(KC_LOAD(pr + jb) - top);
            KC_STORE(pr + jb, x);
            sum += x;
        }
        inv[r] = 1.0f / kc_hsum(sum);
    }
    int64_t e0 = 0;
    for (; e0 + 16 <= d; e0 += 16) {
        dot_rows(R, p, tp, vh + e0, d, t, acc);
        for (int r = 0; r < R; r++) KC_STORE(c + r * ld + e0, acc[r] * inv[r]);
    }
    for (int r = 0; r < R && e0 < d; r++) { /* head dims not a multiple of 16: lanes over e, */
        float *cr = c + r * ld;              /* so the padded width never changes a sum */
        for (int64_t e = e0; e < d; e++) cr[e] = 0.0f;
        for (int64_t j = 0; j < t; j++) {
            float w = p[r * tp + j];
            for (int64_t e = e0; e < d; e++) cr[e] += w * vh[j * d + e];
        }
        for (int64_t e = e0; e < d; e++) cr[e] *= inv[r];
    }
}

/* Keys padded to whole 16-lane blocks, and the floats of scratch attend_head needs. */
KC_INLINE int64_t pad16(int64_t t) { return (t + 15) / 16 * 16; }
KC_INLINE size_t attend_scratch(int64_t t, int64_t d) { return (size_t)(d * pad16(t) + t * d + 4 * d + 4 * pad16(t)); }

/* One head of one text. Q, K, V come as the projections' int8 GEMM outputs Y (one token
   every `ld` floats) with their row scales s and biases: q = Yq s + bq, and so on; the
   1/sqrt(D) score scale is folded into K. scratch: attend_scratch(t, d) floats. */
KC_CLONES static void attend_head(const float *yq, const float *yk, const float *yv, const float *s, const float *bq,
                                  const float *bk, const float *bv, const float *m, int64_t m_step, int64_t t,
                                  int64_t d, int64_t ld, float *scratch, float *c) {
    int64_t tp = pad16(t);
    float scale = 1.0f / sqrtf((float)d);
    float *kt = scratch, *vh = kt + d * tp, *qh = vh + t * d, *p = qh + 4 * d;
    for (int64_t e = 0; e < d; e++) {
        float *row = kt + e * tp;
        for (int64_t j = 0; j < t; j++) row[j] = (yk[j * ld + e] * s[j] + bk[e]) * scale;
        for (int64_t j = t; j < tp; j++) row[j] = 0.0f;
    }
    for (int64_t j = 0; j < t; j++)
        for (int64_t e = 0; e < d; e++) vh[j * d + e] = yv[j * ld + e] * s[j] + bv[e];
    int64_t i = 0;
    for (; i + 4 <= t; i += 4) {
        for (int r = 0; r < 4; r++)
            for (int64_t e = 0; e < d; e++) qh[r * d + e] = yq[(i + r) * ld + e] * s[i + r] + bq[e];
        attend_rows(4, qh, kt, vh, m + i * m_step, m_step, t, tp, d, p, c + i * ld, ld);
    }
    for (; i < t; i++) {
        for (int64_t e = 0; e < d; e++) qh[e] = yq[i * ld + e] * s[i] + bq[e];
        attend_rows(1, qh, kt, vh, m + i * m_step, m_step, t, tp, d, p, c + i * ld, ld);
    }
}

/* ---- kernels --------------------------------------------------------------------------- */

enum { K_ROWQUANT, K_SCALEBIAS, K_GELUQUANT, K_ADDLN, K_ADDLNQUANT, K_ATTN, K_ATTNQUANT };

typedef struct {
    int kind;
    float epsilon;
    int64_t heads;
} Kernel;

typedef struct {
    const float *data;
    int64_t dims[8];
    size_t rank;
    int64_t numel;
} In;

static OrtStatus *fail(const char *msg) { return API(CreateStatus)(ORT_INVALID_ARGUMENT, msg); }

static OrtStatus *get_input(OrtKernelContext *ctx, size_t i, In *in) {
    const OrtValue *v = NULL;
    OrtTensorTypeAndShapeInfo *info = NULL;
    OrtStatus *st = API(KernelContext_GetInput)(ctx, i, &v);
    if (st) return st;
    if ((st = API(GetTensorTypeAndShape)(v, &info))) return st;
    st = API(GetDimensionsCount)(info, &in->rank);
    if (!st && (in->rank < 1 || in->rank > 8)) st = fail("knnclass fused op: input rank must be 1..8");
    if (!st) st = API(GetDimensions)(info, in->dims, in->rank);
    API(ReleaseTensorTypeAndShapeInfo)(info);
    if (st) return st;
    in->numel = 1;
    for (size_t d = 0; d < in->rank; d++) in->numel *= in->dims[d];
    void *p = NULL;
    if ((st = API(GetTensorMutableData)((OrtValue *)v, &p))) return st;
    in->data = (const float *)p;
    return NULL;
}

static OrtStatus *get_output(OrtKernelContext *ctx, size_t i, const int64_t *dims, size_t rank, void **out) {
    OrtValue *v = NULL;
    OrtStatus *st = API(KernelContext_GetOutput)(ctx, i, dims, rank, &v);
    if (st) return st;
    return API(GetTensorMutableData)(v, out);
}

/* Work split over the session's intra-op threads (inline on a one-thread session). */
static OrtStatus *parallel(OrtKernelContext *ctx, void (*fn)(void *, size_t), size_t total, void *arg) {
    if (total <= 1) {
        for (size_t i = 0; i < total; i++) fn(arg, i);
        return NULL;
    }
    return API(KernelContext_ParallelFor)(ctx, fn, total, 0, arg);
}

typedef struct {
    const Kernel *k;
    int64_t n, rows;
    const float *x, *s, *b, *r, *g, *be;
    float *z, *s2;
    uint8_t *q;
    int failed;
} RowJob;

enum { KC_ROWS = 32 }; /* rows per work item */

static void row_items(void *arg, size_t item) {
    RowJob *j = (RowJob *)arg;
    int64_t n = j->n, i0 = (int64_t)item * KC_ROWS, i1 = i0 + KC_ROWS < j->rows ? i0 + KC_ROWS : j->rows;
    float *tmp = NULL;
    if (j->k->kind == K_GELUQUANT && !(tmp = (float *)malloc((size_t)n * sizeof(float)))) {
        __atomic_store_n(&j->failed, 1, __ATOMIC_RELAXED);
        return;
    }
    for (int64_t i = i0; i < i1; i++) {
        const float *x = j->x + i * n;
        switch (j->k->kind) {
        case K_ROWQUANT:
            quant_row(x, n, j->q + i * n, j->s2 + i);
            break;
        case K_SCALEBIAS:
            scale_bias_row(x, j->s[i], j->b, n, j->z + i * n);
            break;
        case K_GELUQUANT:
            quant_with_max(tmp, n, scale_bias_gelu_row(x, j->s[i], j->b, n, tmp), j->q + i * n, j->s2 + i);
            break;
        default: { /* K_ADDLN, K_ADDLNQUANT */
            float m = scale_bias_add_ln_row(x, j->s[i], j->b, j->r + i * n, j->g, j->be, j->k->epsilon, n, j->z + i * n);
            if (j->q) quant_with_max(j->z + i * n, n, m, j->q + i * n, j->s2 + i);
        }
        }
    }
    free(tmp);
}

static OrtStatus *run_rows(OrtKernelContext *ctx, RowJob *j) {
    OrtStatus *st = parallel(ctx, row_items, (size_t)((j->rows + KC_ROWS - 1) / KC_ROWS), j);
    if (!st && j->failed) st = fail("knnclass fused op: out of memory");
    return st;
}

typedef struct {
    const float *yq, *yk, *yv, *s, *bq, *bk, *bv, *m;
    int64_t t, hd, h, d, m_step;
    float *c; /* [B, T, H*D] context */
    int failed;
} AttJob;

static void att_items(void *arg, size_t item) {
    AttJob *j = (AttJob *)arg;
    int64_t bi = (int64_t)item / j->h, hi = (int64_t)item % j->h, t = j->t, d = j->d, hd = j->hd;
    size_t need = attend_scratch(t, d);
    float stack[8192]; /* 32 KiB: enough for 32-dim heads up to 100 tokens */
    float *scratch = need <= sizeof stack / sizeof stack[0] ? stack : (float *)malloc(need * sizeof(float));
    if (!scratch) {
        __atomic_store_n(&j->failed, 1, __ATOMIC_RELAXED);
        return;
    }
    int64_t off = bi * t * hd + hi * d;
    attend_head(j->yq + off, j->yk + off, j->yv + off, j->s + bi * t, j->bq + hi * d, j->bk + hi * d, j->bv + hi * d,
                j->m + bi * (j->m_step ? t * t : t), j->m_step, t, d, hd, scratch, j->c + off);
    if (scratch != stack) free(scratch);
}

static OrtStatus *attention(const Kernel *k, OrtKernelContext *ctx, const In *yq) {
    OrtStatus *st;
    In yk, yv, sc, bq, bk, bv, m;
    if ((st = get_input(ctx, 1, &yk)) || (st = get_input(ctx, 2, &yv)) || (st = get_input(ctx, 3, &sc)) ||
        (st = get_input(ctx, 4, &bq)) || (st = get_input(ctx, 5, &bk)) || (st = get_input(ctx, 6, &bv)) ||
        (st = get_input(ctx, 7, &m)))
        return st;
    if (yq->rank != 3 || yk.numel != yq->numel || yv.numel != yq->numel)
        return fail("knnclass Attention: Q, K and V must be [batch, tokens, heads*head_dim] of one shape");
    int64_t b = yq->dims[0], t = yq->dims[1], hd = yq->dims[2], h = k->heads;
    if (h <= 0 || hd % h) return fail("knnclass Attention: hidden size is not a multiple of num_heads");
    if (sc.numel != b * t) return fail("knnclass Attention: one row scale per token expected");
    if (bq.numel != hd || bk.numel != hd || bv.numel != hd)
        return fail("knnclass Attention: Q, K and V biases must match the hidden size");
    int64_t m_step;
    if (m.numel == b * t)
        m_step = 0; /* one bias row per text, shared by its queries */
    else if (m.numel == b * t * t)
        m_step = t;
    else
        return fail("knnclass Attention: the mask bias must be [batch, 1, 1 or tokens, tokens]");
    AttJob job = {yq->data, yk.data, yv.data, sc.data, bq.data, bk.data, bv.data, m.data, t, hd, h, hd / h, m_step,
                  NULL, 0};
    void *out = NULL, *qo = NULL, *so = NULL;
    float *ctx_buf = NULL;
    if (k->kind == K_ATTN) {
        if ((st = get_output(ctx, 0, yq->dims, 3, &out))) return st;
        job.c = (float *)out;
    } else {
        int64_t sdims[3] = {b, t, 1};
        if ((st = get_output(ctx, 0, yq->dims, 3, &qo)) || (st = get_output(ctx, 1, sdims, 3, &so))) return st;
        ctx_buf = (float *)malloc((size_t)(yq->numel > 0 ? yq->numel : 1) * sizeof(float));
        if (!ctx_buf) return fail("knnclass Attention: out of memory");
        job.c = ctx_buf;
    }
    st = parallel(ctx, att_items, (size_t)(b * h), &job);
    if (!st && job.failed) st = fail("knnclass Attention: out of memory");
    if (!st && k->kind == K_ATTNQUANT) {
        static const Kernel rowquant = {K_ROWQUANT, 0.0f, 0};
        RowJob rows = {&rowquant, hd, b * t, ctx_buf, NULL, NULL, NULL, NULL, NULL, NULL, (float *)so, (uint8_t *)qo, 0};
        st = run_rows(ctx, &rows);
    }
    free(ctx_buf);
    return st;
}

static OrtStatus *compute(void *kernel, OrtKernelContext *ctx) {
    const Kernel *k = (const Kernel *)kernel;
    OrtStatus *st;
    In x;
    if ((st = get_input(ctx, 0, &x))) return st;
    if (k->kind == K_ATTN || k->kind == K_ATTNQUANT) return attention(k, ctx, &x);
    int64_t n = x.dims[x.rank - 1];
    int64_t sdims[8];
    memcpy(sdims, x.dims, sizeof sdims);
    sdims[x.rank - 1] = 1; /* row scales: [..., 1] */
    RowJob j = {k, n, n > 0 ? x.numel / n : 0, x.data, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0};
    void *z = NULL, *q = NULL, *s2 = NULL;
    if (k->kind == K_ROWQUANT) {
        if ((st = get_output(ctx, 0, x.dims, x.rank, &q)) || (st = get_output(ctx, 1, sdims, x.rank, &s2))) return st;
        j.q = (uint8_t *)q, j.s2 = (float *)s2;
        return run_rows(ctx, &j);
    }
    In s, b;
    if ((st = get_input(ctx, 1, &s)) || (st = get_input(ctx, 2, &b))) return st;
    if (s.numel != j.rows) return fail("knnclass fused op: one row scale per row expected");
    if (b.numel != n) return fail("knnclass fused op: bias length must equal the last dimension");
    j.s = s.data, j.b = b.data;
    if (k->kind == K_ADDLN || k->kind == K_ADDLNQUANT) {
        In r, g, be;
        if ((st = get_input(ctx, 3, &r)) || (st = get_input(ctx, 4, &g)) || (st = get_input(ctx, 5, &be))) return st;
        if (r.numel != x.numel) return fail("knnclass fused op: residual shape must equal the input's");
        if (g.numel != n || be.numel != n)
            return fail("knnclass fused op: layer-norm weights must match the last dimension");
        j.r = r.data, j.g = g.data, j.be = be.data;
    }
    if (k->kind == K_SCALEBIAS || k->kind == K_ADDLN || k->kind == K_ADDLNQUANT) {
        if ((st = get_output(ctx, 0, x.dims, x.rank, &z))) return st;
        j.z = (float *)z;
    }
    if (k->kind == K_GELUQUANT &&
        ((st = get_output(ctx, 0, x.dims, x.rank, &q)) || (st = get_output(ctx, 1, sdims, x.rank, &s2))))
        return st;
    if (k->kind == K_ADDLNQUANT &&
        ((st = get_output(ctx, 1, x.dims, x.rank, &q)) || (st = get_output(ctx, 2, sdims, x.rank, &s2))))
        return st;
    j.q = (uint8_t *)q, j.s2 = (float *)s2;
    return run_rows(ctx, &j);
}

/* ---- op descriptions --------------------------------------------------------------- */

static OrtStatus *create_kernel(const KcOp *op, OrtApiTable api, const OrtKernelInfo *info, void **out) {
    (void)api;
    Kernel *k = (Kernel *)calloc(1, sizeof(Kernel));
    if (!k) return fail("knnclass fused op: out of memory");
    k->kind = op->kind;
    k->epsilon = 1e-5f;
    OrtStatus *st = NULL;
    if (op->kind == K_ATTN || op->kind == K_ATTNQUANT)
        st = API(KernelInfoGetAttribute_int64)(info, "num_heads", &k->heads);
    else if (op->kind == K_ADDLN || op->kind == K_ADDLNQUANT)
        st = API(KernelInfoGetAttribute_float)(info, "epsilon", &k->epsilon);
    if (st) {
        free(k);
        return st;
    }
    *out = k;
    return NULL;
}

static void *create_kernel_v1(const KcOp *op, OrtApiTable api, const OrtKernelInfo *info) {
    void *k = NULL;
    OrtStatus *st = create_kernel(op, api, info, &k);
    (void)st; /* only reached by onnxruntime builds without V2 support */
    return k;
}

static void compute_v1(void *kernel, OrtKernelContext *ctx) { (void)compute(kernel, ctx); }
static void destroy_kernel(void *kernel) { free(kernel); }
static const char *op_name(const KcOp *op) { return op->name; }
static const char *op_ep(const KcOp *op) {
    (void)op;
    return "CPUExecutionProvider";
}
static int in_type(const KcOp *op, size_t i) { return op->in_types[i]; }
static size_t in_count(const KcOp *op) { return (size_t)op->n_in; }
static int out_type(const KcOp *op, size_t i) { return op->out_types[i]; }
static size_t out_count(const KcOp *op) { return (size_t)op->n_out; }
static int required(const KcOp *op, size_t i) {
    (void)op, (void)i;
    return 0; /* INPUT_OUTPUT_REQUIRED */
}
static int mem_default(const KcOp *op, size_t i) {
    (void)op, (void)i;
    return 0; /* OrtMemTypeDefault */
}
static int one(const KcOp *op) {
    (void)op;
    return 1;
}

static const int kF1[] = {T_FLOAT};
static const int kF3[] = {T_FLOAT, T_FLOAT, T_FLOAT};
static const int kF8[] = {T_FLOAT, T_FLOAT, T_FLOAT, T_FLOAT, T_FLOAT, T_FLOAT, T_FLOAT, T_FLOAT};
static const int kF6[] = {T_FLOAT, T_FLOAT, T_FLOAT, T_FLOAT, T_FLOAT, T_FLOAT};
static const int kQS[] = {T_UINT8, T_FLOAT};
static const int kFQS[] = {T_FLOAT, T_UINT8, T_FLOAT};

#define KC_OP(NAME, KIND, IN, OUT)                                                                                  \
    {KC_OP_VERSION, create_kernel_v1, op_name, op_ep, in_type, in_count, out_type, out_count, compute_v1,         \
     destroy_kernel, required, required, mem_default, one, one, one, one, create_kernel, compute, NAME, KIND,        \
     (int)(sizeof IN / sizeof IN[0]), IN, (int)(sizeof OUT / sizeof OUT[0]), OUT}

static KcOp g_ops[] = {
    KC_OP("RowQuant", K_ROWQUANT, kF1, kQS),
    KC_OP("ScaleBias", K_SCALEBIAS, kF3, kF1),
    KC_OP("ScaleBiasGeluQuant", K_GELUQUANT, kF3, kQS),
    KC_OP("ScaleBiasAddLayerNorm", K_ADDLN, kF6, kF1),
    KC_OP("ScaleBiasAddLayerNormQuant", K_ADDLNQUANT, kF6, kFQS),
    KC_OP("Attention", K_ATTN, kF8, kF1),
    KC_OP("AttentionQuant", K_ATTNQUANT, kF8, kQS),
};

/* The ops' version, for the loader to detect a library built from other sources. */
KC_EXPORT int knnclass_fusedops_version(void) { return KC_OPS_VERSION; }

KC_EXPORT OrtStatus *RegisterCustomOps(OrtSessionOptions *options, const OrtApiBase *base) {
    OrtApiTable api = base->GetApi(KC_API_VERSION);
    if (!api) return NULL; /* cannot even build a status: onnxruntime older than 1.17 */
    g_api = api;
    /* One domain per call: onnxruntime needs it alive as long as the sessions that use it. */
    OrtCustomOpDomain *domain = NULL;
    OrtStatus *st = API(CreateCustomOpDomain)("ai.knnclass", &domain);
    if (st) return st;
    for (size_t i = 0; i < sizeof g_ops / sizeof g_ops[0]; i++)
        if ((st = API(CustomOpDomain_Add)(domain, &g_ops[i]))) return st;
    return API(AddCustomOpDomain)(options, domain);
}
