/* Design
 * ------
 * The inner loops of the batch normalisation kernels (cnnext/_kernels/_norm.pyx), for float and
 * double data. Every sum runs in double, in 8 interleaved lanes (lane l takes the elements
 * i = l mod 8 of a run, in order), combined in one fixed order (cnx_combine8): a result depends
 * only on the data, never on the thread count. The lanes are independent chains written as
 * fixed-length loops over a local array, which GCC and Clang at -O3 turn into vector code; other
 * compilers run them as plain loops, with the same results. The functions are not inlined, so each
 * compiles in this shape.
 *
 * On x86-64 (GCC, Clang) every loop is compiled twice, for the baseline ISA (SSE2: two doubles per
 * vector) and for AVX2 (four), and cnx_norm_init() picks one at import from the CPU's features.
 * The AVX2 build does not enable FMA, so no multiply-add is ever fused and both builds round
 * every operation the same way: the results are bitwise identical on every x86-64 CPU.
 *
 *   cnx_sum8(x, n, acc)             acc[0:8] += x
 *   cnx_dev8(x, n, m, s, q)         s[0:8] += x - m, q[0:8] += (x - m)**2
 *   cnx_run_stats(x, n, sum, m2)    one run: its sum and its sum of squared deviations from its
 *                                   own mean (corrected two-pass, the run in L1 for the second)
 *   cnx_grad8(gy, x, n, m, g, e)    g[0:8] += gy, e[0:8] += gy * (x - m)
 *   cnx_affine(x, y, n, a, b)       y = x * a + b (in T)
 *   cnx_scale(x, y, n, a)           y = x * a
 *   cnx_grad_input(gy, x, gx, n, k, c1, m, c2)   gx = k * gy + c1 * (x - m) + c2 (in T)
 *   cnx_rows_*(x, N, ld, cnt, ...)  the sums for (N, C) data: channel j < cnt of a block at
 *                                   x[n*ld + j], one accumulator per channel, rows in order,
 *                                   the loop over the block's channels vectorised
 */
#ifndef CNNEXT_NORM_H
#define CNNEXT_NORM_H

#include <stddef.h>

#if defined(__GNUC__) || defined(__clang__)
#define CNX_NOINLINE __attribute__((noinline))
#elif defined(_MSC_VER)
#define CNX_NOINLINE __declspec(noinline)
#else
#define CNX_NOINLINE
#endif

#if defined(_MSC_VER)
#define CNX_RESTRICT __restrict
#else
#define CNX_RESTRICT restrict
#endif

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#define CNX_HAVE_AVX2_BUILD 1
#else
#define CNX_HAVE_AVX2_BUILD 0
#endif

/* The fixed order in which the 8 lanes of a sum are combined. */
static double cnx_combine8(const double *a)
{
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

/* Every kernel, for element type T, named NAME_SUF, with function attributes ATTR. */
#define CNX_DEFINE_NORM_KERNELS(T, SUF, ATTR)                                                   \
static CNX_NOINLINE ATTR void cnx_sum8_##SUF(const T *CNX_RESTRICT x, ptrdiff_t n,           \
                                             double *CNX_RESTRICT acc)                       \
{                                                                                            \
    double a[8];                                                                             \
    ptrdiff_t i, l;                                                                          \
    for (l = 0; l < 8; l++) a[l] = acc[l];                                                   \
    for (i = 0; i + 8 <= n; i += 8)                                                          \
        for (l = 0; l < 8; l++) a[l] += (double)x[i + l];                                    \
    for (l = 0; i + l < n; l++) a[l] += (double)x[i + l];                                    \
    for (l = 0; l < 8; l++) acc[l] = a[l];                                                   \
}                                                                                            \
                                                                                             \
static CNX_NOINLINE ATTR void cnx_dev8_##SUF(const T *CNX_RESTRICT x, ptrdiff_t n, double m, \
                                             double *CNX_RESTRICT s, double *CNX_RESTRICT q) \
{                                                                                            \
    double a[8], b[8], d;                                                                    \
    ptrdiff_t i, l;                                                                          \
    for (l = 0; l < 8; l++) { a[l] = s[l]; b[l] = q[l]; }                                    \
    for (i = 0; i + 8 <= n; i += 8)                                                          \
        for (l = 0; l < 8; l++) { d = (double)x[i + l] - m; a[l] += d; b[l] += d * d; }      \
    for (l = 0; i + l < n; l++) { d = (double)x[i + l] - m; a[l] += d; b[l] += d * d; }      \
    for (l = 0; l < 8; l++) { s[l] = a[l]; q[l] = b[l]; }                                    \
}                                                                                            \
                                                                                             \
static CNX_NOINLINE ATTR void cnx_grad8_##SUF(const T *CNX_RESTRICT gy,                      \
                                              const T *CNX_RESTRICT x, ptrdiff_t n,          \
                                              double m, double *CNX_RESTRICT g,              \
                                              double *CNX_RESTRICT e)                        \
{                                                                                            \
    double a[8], b[8], v;                                                                    \
    ptrdiff_t i, l;                                                                          \
    for (l = 0; l < 8; l++) { a[l] = g[l]; b[l] = e[l]; }                                    \
    for (i = 0; i + 8 <= n; i += 8)                                                          \
        for (l = 0; l < 8; l++) {                                                            \
            v = (double)gy[i + l];                                                           \
            a[l] += v;                                                                       \
            b[l] += v * ((double)x[i + l] - m);                                              \
        }                                                                                    \
    for (l = 0; i + l < n; l++) {                                                            \
        v = (double)gy[i + l];                                                               \
        a[l] += v;                                                                           \
        b[l] += v * ((double)x[i + l] - m);                                                  \
    }                                                                                        \
    for (l = 0; l < 8; l++) { g[l] = a[l]; e[l] = b[l]; }                                    \
}                                                                                            \
                                                                                             \
static CNX_NOINLINE ATTR void cnx_affine_##SUF(const T *CNX_RESTRICT x, T *CNX_RESTRICT y,   \
                                               ptrdiff_t n, T a, T b)                        \
{                                                                                            \
    ptrdiff_t i;                                                                             \
    for (i = 0; i < n; i++) y[i] = x[i] * a + b;                                             \
}                                                                                            \
                                                                                             \
static CNX_NOINLINE ATTR void cnx_scale_##SUF(const T *CNX_RESTRICT x, T *CNX_RESTRICT y,    \
                                              ptrdiff_t n, T a)                              \
{                                                                                            \
    ptrdiff_t i;                                                                             \
    for (i = 0; i < n; i++) y[i] = x[i] * a;                                                 \
}                                                                                            \
                                                                                             \
static CNX_NOINLINE ATTR void cnx_grad_input_##SUF(const T *CNX_RESTRICT gy,                 \
                                                   const T *CNX_RESTRICT x,                  \
                                                   T *CNX_RESTRICT gx, ptrdiff_t n, T k,     \
                                                   T c1, T m, T c2)                          \
{                                                                                            \
    ptrdiff_t i;                                                                             \
    for (i = 0; i < n; i++) gx[i] = k * gy[i] + c1 * (x[i] - m) + c2;                        \
}                                                                                            \
                                                                                             \
static CNX_NOINLINE ATTR void cnx_rows_sum_##SUF(const T *CNX_RESTRICT x, ptrdiff_t N,       \
                                                 ptrdiff_t ld, ptrdiff_t cnt,                \
                                                 double *CNX_RESTRICT acc)                   \
{                                                                                            \
    ptrdiff_t n, j;                                                                          \
    for (n = 0; n < N; n++)                                                                  \
        for (j = 0; j < cnt; j++) acc[j] += (double)x[n * ld + j];                           \
}                                                                                            \
                                                                                             \
static CNX_NOINLINE ATTR void cnx_rows_dev_##SUF(const T *CNX_RESTRICT x, ptrdiff_t N,       \
                                                 ptrdiff_t ld, ptrdiff_t cnt,                \
                                                 const double *CNX_RESTRICT m,               \
                                                 double *CNX_RESTRICT s,                     \
                                                 double *CNX_RESTRICT q)                     \
{                                                                                            \
    ptrdiff_t n, j;                                                                          \
    double d;                                                                                \
    for (n = 0; n < N; n++)                                                                  \
        for (j = 0; j < cnt; j++) {                                                          \
            d = (double)x[n * ld + j] - m[j];                                                \
            s[j] += d;                                                                       \
            q[j] += d * d;                                                                   \
        }                                                                                    \
}                                                                                            \
                                                                                             \
static CNX_NOINLINE ATTR void cnx_rows_grad_##SUF(const T *CNX_RESTRICT gy,                  \
                                                  const T *CNX_RESTRICT x, ptrdiff_t N,      \
                                                  ptrdiff_t ld, ptrdiff_t cnt,               \
                                                  const double *CNX_RESTRICT m,              \
                                                  double *CNX_RESTRICT g,                    \
                                                  double *CNX_RESTRICT e)                    \
{                                                                                            \
    ptrdiff_t n, j;                                                                          \
    double v;                                                                                \
    for (n = 0; n < N; n++)                                                                  \
        for (j = 0; j < cnt; j++) {                                                          \
            v = (double)gy[n * ld + j];                                                      \
            g[j] += v;                                                                       \
            e[j] += v * ((double)x[n * ld + j] - m[j]);                                      \
        }                                                                                    \
}

CNX_DEFINE_NORM_KERNELS(float, f_base, )
CNX_DEFINE_NORM_KERNELS(double, d_base, )
#if CNX_HAVE_AVX2_BUILD
/* AVX2 without FMA: the same roundings as the baseline build (see the Design note). */
CNX_DEFINE_NORM_KERNELS(float, f_avx2, __attribute__((target("avx2"))))
CNX_DEFINE_NORM_KERNELS(double, d_avx2, __attribute__((target("avx2"))))
#endif

/* 1 when the AVX2 build runs, 0 for the baseline one. */
static int cnx_norm_avx2 = 0;

static int cnx_norm_init(void)
{
#if CNX_HAVE_AVX2_BUILD
    __builtin_cpu_init();
    cnx_norm_avx2 = __builtin_cpu_supports("avx2") ? 1 : 0;
#endif
    return cnx_norm_avx2;
}

/* Dispatchers: the entry points _norm.pyx calls. */
#if CNX_HAVE_AVX2_BUILD
#define CNX_PICK(NAME, SUF, ARGS) \
    do { if (cnx_norm_avx2) NAME##_##SUF##_avx2 ARGS; else NAME##_##SUF##_base ARGS; } while (0)
#else
#define CNX_PICK(NAME, SUF, ARGS) NAME##_##SUF##_base ARGS
#endif

#define CNX_DEFINE_DISPATCH(T, SUF)                                                             \
static void cnx_sum8_##SUF(const T *x, ptrdiff_t n, double *acc)                             \
{ CNX_PICK(cnx_sum8, SUF, (x, n, acc)); }                                                    \
static void cnx_dev8_##SUF(const T *x, ptrdiff_t n, double m, double *s, double *q)          \
{ CNX_PICK(cnx_dev8, SUF, (x, n, m, s, q)); }                                                \
static void cnx_grad8_##SUF(const T *gy, const T *x, ptrdiff_t n, double m, double *g,       \
                            double *e)                                                       \
{ CNX_PICK(cnx_grad8, SUF, (gy, x, n, m, g, e)); }                                           \
static void cnx_affine_##SUF(const T *x, T *y, ptrdiff_t n, T a, T b)                        \
{ CNX_PICK(cnx_affine, SUF, (x, y, n, a, b)); }                                              \
static void cnx_scale_##SUF(const T *x, T *y, ptrdiff_t n, T a)                              \
{ CNX_PICK(cnx_scale, SUF, (x, y, n, a)); }                                                  \
static void cnx_grad_input_##SUF(const T *gy, const T *x, T *gx, ptrdiff_t n, T k, T c1,     \
                                 T m, T c2)                                                  \
{ CNX_PICK(cnx_grad_input, SUF, (gy, x, gx, n, k, c1, m, c2)); }                             \
static void cnx_rows_sum_##SUF(const T *x, ptrdiff_t N, ptrdiff_t ld, ptrdiff_t cnt,         \
                               double *acc)                                                  \
{ CNX_PICK(cnx_rows_sum, SUF, (x, N, ld, cnt, acc)); }                                       \
static void cnx_rows_dev_##SUF(const T *x, ptrdiff_t N, ptrdiff_t ld, ptrdiff_t cnt,         \
                               const double *m, double *s, double *q)                        \
{ CNX_PICK(cnx_rows_dev, SUF, (x, N, ld, cnt, m, s, q)); }                                   \
static void cnx_rows_grad_##SUF(const T *gy, const T *x, ptrdiff_t N, ptrdiff_t ld,          \
                                ptrdiff_t cnt, const double *m, double *g, double *e)        \
{ CNX_PICK(cnx_rows_grad, SUF, (gy, x, N, ld, cnt, m, g, e)); }                              \
                                                                                             \
static void cnx_run_stats_##SUF(const T *x, ptrdiff_t n, double *sum, double *m2)            \
{                                                                                            \
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0}, q[8] = {0, 0, 0, 0, 0, 0, 0, 0};               \
    double total, mean, d;                                                                   \
    int l;                                                                                   \
    cnx_sum8_##SUF(x, n, acc);                                                               \
    total = cnx_combine8(acc);                                                               \
    mean = total / (double)n;                                                                \
    for (l = 0; l < 8; l++) acc[l] = 0;                                                      \
    cnx_dev8_##SUF(x, n, mean, acc, q);                                                      \
    d = cnx_combine8(acc);                                                                   \
    d = cnx_combine8(q) - d * d / (double)n;                                                 \
    *sum = total;                                                                            \
    *m2 = d > 0 ? d : 0;                                                                     \
}

CNX_DEFINE_DISPATCH(float, f)
CNX_DEFINE_DISPATCH(double, d)

#endif
