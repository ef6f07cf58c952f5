/* Design
 * ------
 * The GEMMs of the Winograd convolution (cnnext/_kernels/_winograd.pyx): per transform element e, 36 of
 * them per chunk of the batch, each small (channels x channels x tiles of one chunk, e.g.
 * 128 x 128 x 48). BLAS packs both operands again on every call, which at these sizes costs as
 * much as the multiplies (benchmarks/README.md has the figures).
 * Here the weights are packed once per convolution (in Python, by row blocks of MR) and the
 * tile matrix is read in place, so one register-blocked kernel does all the work:
 *
 *   c[i, j] = sum_l A[i, l] b[l, j]   for i < M, j < ncols
 *
 * with A packed as ap[(ib*L + l)*MR + r] = A[ib*MR + r, l] (zero rows past M) and b read with
 * row pitch ldb. Each step of the inner loop loads NR (two vectors) of one row of b, broadcasts
 * MR values of A and does 2*MR vector multiply-adds into 2*MR accumulators that stay in
 * registers (12 + 2 + 1 of the 16 AVX2 registers). Columns j up to ncols rounded up to NR are
 * read from b (the caller pads the rows); only the M x ncols block is written.
 *
 * Vectors are GCC/Clang vector extensions. On x86-64 the kernels are compiled twice, for AVX2+FMA
 * and for the baseline ISA, and cnnext_tile_gemm_init() picks one at import from the CPU's
 * features, so one wheel runs everywhere and uses AVX2 where it exists. Other compilers get plain
 * loops (the Python side then keeps using numpy's BLAS). Each output element is one fixed
 * sequence of multiply-adds over l in order: results do not depend on the thread count.
 */
#ifndef CNNEXT_TILE_GEMM_H
#define CNNEXT_TILE_GEMM_H

#include <stddef.h>
#include <string.h>

#define CNNEXT_MR 6
/* Elements per row that the kernels may read past ncols, rounded: callers pad rows to this. */
#define CNNEXT_NR_MAX 16

/* Each extension including this header uses some of its kernels only. */
#if defined(__GNUC__) || defined(__clang__)
#define CNNEXT_MAYBE_UNUSED __attribute__((unused))
#else
#define CNNEXT_MAYBE_UNUSED
#endif

#if defined(__GNUC__) || defined(__clang__)
#define CNNEXT_VECTORS 1
typedef float cnnext_v8f __attribute__((vector_size(32)));
typedef double cnnext_v4d __attribute__((vector_size(32)));
#else
#define CNNEXT_VECTORS 0
#endif

/* The kernels' parameter lists (each kernel has an AVX2+FMA build, a baseline build and a
 * dispatcher of the same signature). */
#define CNNEXT_TILE_PARAMS(T) (const T *ap, const T *b, T *c, ptrdiff_t M, ptrdiff_t L,         \
                               ptrdiff_t ncols, ptrdiff_t ldb, ptrdiff_t ldc)
#define CNNEXT_TILE_ARGS (ap, b, c, M, L, ncols, ldb, ldc)
#define CNNEXT_IMPLICIT_PARAMS(T) (const T *ap, const T *base, const ptrdiff_t *off, T *c,     \
                                   ptrdiff_t M, ptrdiff_t L, ptrdiff_t ncols, ptrdiff_t ldc,    \
                                   const T *bias)
#define CNNEXT_IMPLICIT_ARGS (ap, base, off, c, M, L, ncols, ldc, bias)
#define CNNEXT_ROWS_PARAMS(T) (const T *a, ptrdiff_t L, const T *base, const ptrdiff_t *off,    \
                               ptrdiff_t W, T *out, ptrdiff_t Ho, ptrdiff_t Wo, ptrdiff_t ldo,  \
                               T bias)
#define CNNEXT_ROWS_ARGS (a, L, base, off, W, out, Ho, Wo, ldo, bias)

/* How row l of b is found, and the bias of row i: the tile GEMM's (rows ldb apart, no bias) and
 * the implicit GEMM's (rows through an offset table, an optional bias per row). */
#define CNNEXT_TILE_ROW(l) (bj + (l) * ldb)
#define CNNEXT_NO_BIAS(i) 0
#define CNNEXT_OFFSET_ROW(l) (bj + off[l])
#define CNNEXT_ROW_BIAS(i) (bias ? bias[i] : 0)

#if CNNEXT_VECTORS

#define CNNEXT_BCAST8(s) {s, s, s, s, s, s, s, s}
#define CNNEXT_BCAST4(s) {s, s, s, s}

/* Row r of the register block: broadcast A[i0 + r, l] and multiply-add it into both vectors
 * (each broadcast used at once: holding all six would spill accumulators). */
#define CNNEXT_ROW(BCAST, V, T, x, lo, hi) { T s_ = (x); V a_ = BCAST(s_); lo += a_ * b0; hi += a_ * b1; }

/* The register-blocked loop both GEMM kernels share: for each block of NR = 2 * VL columns (j0) and
 * CNNEXT_MR rows (i0), c[i, j] = sum over l < L of ap[i0 * L + l * MR + (i - i0)] * ROW(l)[j - j0],
 * where ROW(l) is row l of b from the block's first column bj (b + j0, or the base pointer + j0),
 * plus BIAS(i) when HAS_BIAS. Only the M x ncols block is written. */
#define CNNEXT_BLOCKS(T, V, VL, BCAST, ROW, HAS_BIAS, BIAS)                                  \
    const ptrdiff_t NR = 2 * (VL);                                                          \
    ptrdiff_t j0, i0, l, r, j;                                                              \
    for (j0 = 0; j0 < ncols; j0 += NR) {                                                    \
        for (i0 = 0; i0 < M; i0 += CNNEXT_MR) {                                             \
            const T *a = ap + i0 * L;                                                       \
            const T *bj = B0 + j0;                                                          \
            V z = {0};                                                                      \
            V c00 = z, c01 = z, c10 = z, c11 = z, c20 = z, c21 = z;                         \
            V c30 = z, c31 = z, c40 = z, c41 = z, c50 = z, c51 = z;                         \
            for (l = 0; l < L; l++) {                                                       \
                V b0, b1;                                                                   \
                memcpy(&b0, ROW(l), sizeof(V));                                             \
                memcpy(&b1, ROW(l) + (VL), sizeof(V));                                      \
                const T *al = a + l * CNNEXT_MR;                                            \
                CNNEXT_ROW(BCAST, V, T, al[0], c00, c01)                                    \
                CNNEXT_ROW(BCAST, V, T, al[1], c10, c11)                                    \
                CNNEXT_ROW(BCAST, V, T, al[2], c20, c21)                                    \
                CNNEXT_ROW(BCAST, V, T, al[3], c30, c31)                                    \
                CNNEXT_ROW(BCAST, V, T, al[4], c40, c41)                                    \
                CNNEXT_ROW(BCAST, V, T, al[5], c50, c51)                                    \
            }                                                                               \
            V acc[CNNEXT_MR][2] = {{c00, c01}, {c10, c11}, {c20, c21},                      \
                                   {c30, c31}, {c40, c41}, {c50, c51}};                     \
            ptrdiff_t rows = M - i0 < CNNEXT_MR ? M - i0 : CNNEXT_MR;                       \
            ptrdiff_t cols = ncols - j0 < NR ? ncols - j0 : NR;                             \
            for (r = 0; r < rows; r++) {                                                    \
                T *dst = c + (i0 + r) * ldc + j0;                                           \
                if (!(HAS_BIAS) && cols == NR) {                                            \
                    memcpy(dst, &acc[r][0], sizeof(V));                                     \
                    memcpy(dst + (VL), &acc[r][1], sizeof(V));                              \
                } else {                                                                    \
                    T tmp[2 * (VL)];                                                        \
                    memcpy(tmp, &acc[r][0], sizeof(V));                                     \
                    memcpy(tmp + (VL), &acc[r][1], sizeof(V));                              \
                    if (HAS_BIAS) {                                                         \
                        T bias_r = BIAS(i0 + r);                                            \
                        for (j = 0; j < cols; j++) dst[j] = tmp[j] + bias_r;                \
                    } else {                                                                \
                        for (j = 0; j < cols; j++) dst[j] = tmp[j];                         \
                    }                                                                       \
                }                                                                           \
            }                                                                               \
        }                                                                                   \
    }

/* The tile GEMM c = A b (row l of b at b + l * ldb) and the implicit GEMM c = bias + A b (row l
 * of b at base + off[l], e.g. one filter tap's shifted input row; bias per row, NULL: none), for
 * element type T, vector type V of VL elements, with function attributes ATTR. */
#define CNNEXT_DEFINE_KERNEL(NAME, T, V, VL, BCAST, ATTR)                                      \
ATTR static void NAME CNNEXT_TILE_PARAMS(T)                                                 \
{                                                                                           \
    const T *B0 = b;                                                                        \
    CNNEXT_BLOCKS(T, V, VL, BCAST, CNNEXT_TILE_ROW, 0, CNNEXT_NO_BIAS)                      \
}
#define CNNEXT_DEFINE_IMPLICIT(NAME, T, V, VL, BCAST, ATTR)                                    \
ATTR static void NAME CNNEXT_IMPLICIT_PARAMS(T)                                             \
{                                                                                           \
    const T *B0 = base;                                                                     \
    CNNEXT_BLOCKS(T, V, VL, BCAST, CNNEXT_OFFSET_ROW, 1, CNNEXT_ROW_BIAS)                   \
}

#if defined(__x86_64__) || defined(__i386__)
#define CNNEXT_AVX2 __attribute__((target("avx2,fma")))
CNNEXT_DEFINE_KERNEL(cnnext_kernel_f32_avx2, float, cnnext_v8f, 8, CNNEXT_BCAST8, CNNEXT_AVX2)
CNNEXT_DEFINE_KERNEL(cnnext_kernel_f64_avx2, double, cnnext_v4d, 4, CNNEXT_BCAST4, CNNEXT_AVX2)
CNNEXT_DEFINE_IMPLICIT(cnnext_implicit_f32_avx2, float, cnnext_v8f, 8, CNNEXT_BCAST8, CNNEXT_AVX2)
CNNEXT_DEFINE_IMPLICIT(cnnext_implicit_f64_avx2, double, cnnext_v4d, 4, CNNEXT_BCAST4, CNNEXT_AVX2)
#endif
CNNEXT_DEFINE_KERNEL(cnnext_kernel_f32_base, float, cnnext_v8f, 8, CNNEXT_BCAST8, )
CNNEXT_DEFINE_KERNEL(cnnext_kernel_f64_base, double, cnnext_v4d, 4, CNNEXT_BCAST4, )
CNNEXT_DEFINE_IMPLICIT(cnnext_implicit_f32_base, float, cnnext_v8f, 8, CNNEXT_BCAST8, )
CNNEXT_DEFINE_IMPLICIT(cnnext_implicit_f64_base, double, cnnext_v4d, 4, CNNEXT_BCAST4, )

#else /* no vector extensions: plain loops with the same summation order */

#define CNNEXT_PLAIN_BLOCKS(T, ROW, HAS_BIAS, BIAS)                                           \
    ptrdiff_t i, j, l;                                                                      \
    for (i = 0; i < M; i++) {                                                               \
        const T *a = ap + (i / CNNEXT_MR) * CNNEXT_MR * L + i % CNNEXT_MR;                  \
        for (j = 0; j < ncols; j++) {                                                       \
            const T *bj = B0 + j;                                                           \
            T s = 0;                                                                        \
            for (l = 0; l < L; l++) s += a[l * CNNEXT_MR] * *ROW(l);                        \
            c[i * ldc + j] = (HAS_BIAS) ? s + BIAS(i) : s;                                  \
        }                                                                                   \
    }
#define CNNEXT_DEFINE_PLAIN(NAME, T)                                                        \
static void NAME CNNEXT_TILE_PARAMS(T)                                                      \
{                                                                                           \
    const T *B0 = b;                                                                        \
    CNNEXT_PLAIN_BLOCKS(T, CNNEXT_TILE_ROW, 0, CNNEXT_NO_BIAS)                              \
}
#define CNNEXT_DEFINE_IMPLICIT_PLAIN(NAME, T)                                               \
static void NAME CNNEXT_IMPLICIT_PARAMS(T)                                                  \
{                                                                                           \
    const T *B0 = base;                                                                     \
    CNNEXT_PLAIN_BLOCKS(T, CNNEXT_OFFSET_ROW, 1, CNNEXT_ROW_BIAS)                           \
}
CNNEXT_DEFINE_PLAIN(cnnext_kernel_f32_base, float)
CNNEXT_DEFINE_PLAIN(cnnext_kernel_f64_base, double)
CNNEXT_DEFINE_IMPLICIT_PLAIN(cnnext_implicit_f32_base, float)
CNNEXT_DEFINE_IMPLICIT_PLAIN(cnnext_implicit_f64_base, double)

#endif

/* 2: AVX2+FMA kernels, 1: vector extensions for the baseline ISA, 0: plain loops. */
static int cnnext_tile_gemm_level = -1;

static int cnnext_tile_gemm_init(void)
{
    int level = CNNEXT_VECTORS;
#if CNNEXT_VECTORS && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) level = 2;
#endif
    cnnext_tile_gemm_level = level;
    return level;
}


/* ---- Small direct convolutions (cnnext/_kernels/_direct.pyx, one thread) ------------------------------
 * A plane of outputs out[r * ldo + j] = bias + sum over l < L of a[l] * base[off[l] + r * W + j]
 * (r < rows, j < cols), in blocks of 6 rows by NR = two vectors of columns held in 12 vector
 * registers: per l, one broadcast of a[l], two loads from each of the 6 rows and 12 multiply-adds
 * (the loads overlap from one l to the next and stay in L1). With l running over (channel, tap
 * row, tap column) and off[l] the tap's offset this is a stride-1 convolution (forward, and
 * grad_input on the padded grad_output with the filters turned); with l over the output pixels,
 * a[l] = grad_output and off[l] the pixel's offset, it is a row of grad_weight's taps. A block
 * reads 6 rows and NR columns even where fewer are valid: the caller leaves CNNEXT_SLACK(W)
 * readable elements after its input (zeros). Each output sums l in order: deterministic. */
#define CNNEXT_SLACK(W) (6 * (W) + CNNEXT_NR_MAX)

#if CNNEXT_VECTORS

#define CNNEXT_RROW(r, lo, hi)                                                                 \
    memcpy(&b0, p + (r) * W, sizeof(b0)); memcpy(&b1, p + (r) * W + vl, sizeof(b1));          \
    lo += w * b0; hi += w * b1;

#define CNNEXT_DEFINE_ROWS(NAME, T, V, VL, BCAST, ATTR)                                         \
ATTR static void NAME CNNEXT_ROWS_PARAMS(T)                                                 \
{                                                                                           \
    const ptrdiff_t vl = (VL), NR = 2 * (VL);                                               \
    ptrdiff_t r0, j0, l, r, j;                                                              \
    for (r0 = 0; r0 < Ho; r0 += 6) {                                                        \
        for (j0 = 0; j0 < Wo; j0 += NR) {                                                   \
            const T *blk = base + r0 * W + j0;                                              \
            V z = {0};                                                                      \
            V c00 = z, c01 = z, c10 = z, c11 = z, c20 = z, c21 = z;                         \
            V c30 = z, c31 = z, c40 = z, c41 = z, c50 = z, c51 = z;                         \
            for (l = 0; l < L; l++) {                                                       \
                const T *p = blk + off[l];                                                  \
                T s = a[l];                                                                 \
                V w = BCAST(s), b0, b1;                                                     \
                CNNEXT_RROW(0, c00, c01) CNNEXT_RROW(1, c10, c11) CNNEXT_RROW(2, c20, c21)  \
                CNNEXT_RROW(3, c30, c31) CNNEXT_RROW(4, c40, c41) CNNEXT_RROW(5, c50, c51)  \
            }                                                                               \
            V acc[6][2] = {{c00, c01}, {c10, c11}, {c20, c21},                              \
                           {c30, c31}, {c40, c41}, {c50, c51}};                             \
            ptrdiff_t rows = Ho - r0 < 6 ? Ho - r0 : 6;                                     \
            ptrdiff_t cols = Wo - j0 < NR ? Wo - j0 : NR;                                   \
            for (r = 0; r < rows; r++) {                                                    \
                T tmp[2 * (VL)];                                                            \
                T *dst = out + (r0 + r) * ldo + j0;                                         \
                memcpy(tmp, &acc[r][0], sizeof(V));                                         \
                memcpy(tmp + (VL), &acc[r][1], sizeof(V));                                  \
                for (j = 0; j < cols; j++) dst[j] = tmp[j] + bias;                          \
            }                                                                               \
        }                                                                                   \
    }                                                                                       \
}

#if defined(__x86_64__) || defined(__i386__)
CNNEXT_DEFINE_ROWS(cnnext_rows_f32_avx2, float, cnnext_v8f, 8, CNNEXT_BCAST8, CNNEXT_AVX2)
CNNEXT_DEFINE_ROWS(cnnext_rows_f64_avx2, double, cnnext_v4d, 4, CNNEXT_BCAST4, CNNEXT_AVX2)
#endif
CNNEXT_DEFINE_ROWS(cnnext_rows_f32_base, float, cnnext_v8f, 8, CNNEXT_BCAST8, )
CNNEXT_DEFINE_ROWS(cnnext_rows_f64_base, double, cnnext_v4d, 4, CNNEXT_BCAST4, )

#else /* plain loops */

#define CNNEXT_DEFINE_ROWS_PLAIN(NAME, T)                                                   \
static void NAME CNNEXT_ROWS_PARAMS(T)                                                      \
{                                                                                           \
    ptrdiff_t r, j, l;                                                                      \
    for (r = 0; r < Ho; r++)                                                                \
        for (j = 0; j < Wo; j++) {                                                          \
            T s = 0;                                                                        \
            for (l = 0; l < L; l++) s += a[l] * base[off[l] + r * W + j];                   \
            out[r * ldo + j] = s + bias;                                                    \
        }                                                                                   \
}
CNNEXT_DEFINE_ROWS_PLAIN(cnnext_rows_f32_base, float)
CNNEXT_DEFINE_ROWS_PLAIN(cnnext_rows_f64_base, double)


#endif

/* ---- Dispatch: each kernel's AVX2+FMA build where cnnext_tile_gemm_init() found AVX2 and FMA,
 * else its baseline build. */
#if CNNEXT_VECTORS && (defined(__x86_64__) || defined(__i386__))
#define CNNEXT_CALL(NAME, ARGS)                                                             \
    do { if (cnnext_tile_gemm_level == 2) NAME##_avx2 ARGS; else NAME##_base ARGS; } while (0)
#else
#define CNNEXT_CALL(NAME, ARGS) NAME##_base ARGS
#endif
#define CNNEXT_DISPATCHER(NAME, PARAMS, ARGS)                                               \
    CNNEXT_MAYBE_UNUSED static void NAME PARAMS { CNNEXT_CALL(NAME, ARGS); }

CNNEXT_DISPATCHER(cnnext_kernel_f32, CNNEXT_TILE_PARAMS(float), CNNEXT_TILE_ARGS)
CNNEXT_DISPATCHER(cnnext_kernel_f64, CNNEXT_TILE_PARAMS(double), CNNEXT_TILE_ARGS)
CNNEXT_DISPATCHER(cnnext_implicit_f32, CNNEXT_IMPLICIT_PARAMS(float), CNNEXT_IMPLICIT_ARGS)
CNNEXT_DISPATCHER(cnnext_implicit_f64, CNNEXT_IMPLICIT_PARAMS(double), CNNEXT_IMPLICIT_ARGS)
CNNEXT_DISPATCHER(cnnext_rows_f32, CNNEXT_ROWS_PARAMS(float), CNNEXT_ROWS_ARGS)
CNNEXT_DISPATCHER(cnnext_rows_f64, CNNEXT_ROWS_PARAMS(double), CNNEXT_ROWS_ARGS)

#endif /* CNNEXT_TILE_GEMM_H */
