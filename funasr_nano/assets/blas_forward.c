/* cblas_sgemm for MLX's Linux CPU backend, forwarding to OpenBLAS (scipy-openblas32 build).
 *
 * Why: MLX computes every float32 matmul with cblas_sgemm, including the one-row products of
 * token-by-token decoding. OpenBLAS's sgemm packs its operands even when one dimension is 1,
 * which reaches ~10 GB/s on the project's 2-core machine, while its sgemv streams the matrix at
 * ~33 GB/s. So a product with M == 1 or N == 1 is handed to sgemv here; everything else goes to
 * OpenBLAS's sgemm unchanged. The results are the same up to float32 summation order.
 *
 * Built by funasr_nano/runtime/blas.py with the system C compiler, linked against libscipy_openblas.so,
 * and loaded RTLD_GLOBAL before MLX so that MLX's cblas_sgemm relocation binds here.
 */

enum { RowMajor = 101, ColMajor = 102, NoTrans = 111, Trans = 112, ConjTrans = 113 };

extern void scipy_cblas_sgemm(int order, int ta, int tb, int m, int n, int k, float alpha,
                              const float *a, int lda, const float *b, int ldb, float beta,
                              float *c, int ldc);
extern void scipy_cblas_sgemv(int order, int trans, int m, int n, float alpha, const float *a,
                              int lda, const float *x, int incx, float beta, float *y, int incy);

/* Up to this many rows, a product is computed as one sgemv per row (measured on 1024x3072:
   sgemv 0.39 ms per row vs sgemm 1.2-1.4 ms for 1-4 rows). */
#define ROWS_VIA_GEMV 3

static long long forwarded = 0;

/* Number of products handed to sgemv so far (lets the loader check that MLX binds here). */
long long funasr_nano_blas_forwarded(void) { return forwarded; }

void cblas_sgemm(int order, int ta, int tb, int m, int n, int k, float alpha, const float *a,
                 int lda, const float *b, int ldb, float beta, float *c, int ldc) {
    if (order == ColMajor) {
        /* C^T = op(B)^T op(A)^T in row-major terms. */
        int t = ta; ta = tb; tb = t;
        const float *p = a; a = b; b = p;
        int l = lda; lda = ldb; ldb = l;
        t = m; m = n; n = t;
    }
    if (ta == ConjTrans) ta = Trans;
    if (tb == ConjTrans) tb = Trans;
    if (k > 0 && m > 1 && m <= ROWS_VIA_GEMV && n > ROWS_VIA_GEMV) {
        /* A few rows (small decode batches): one sgemv per row still beats sgemm's packing. */
        for (int i = 0; i < m; i++) {
            const float *ai = (ta == NoTrans) ? a + (long)i * lda : a + i;
            cblas_sgemm(RowMajor, ta, tb, 1, n, k, alpha, ai, lda, b, ldb, beta, c + (long)i * ldc, ldc);
        }
        return;
    }
    if (k > 0 && m == 1 && n > 1) {
        /* c[0, :] = alpha * op(B)^T a_row + beta * c: op(B) is k x n.
           tb == NoTrans: B is k x n (ldb) -> y = B^T x; tb == Trans: B is n x k -> y = B x. */
        int incx = (ta == NoTrans) ? 1 : lda;
        /* MLX hands over uninitialised output with beta == 0; zero it so that no NaN in the
           garbage can survive a beta scaling inside sgemv. */
        if (beta == 0.0f)
            for (int j = 0; j < n; j++) c[j] = 0.0f;
        if (tb == NoTrans)
            scipy_cblas_sgemv(RowMajor, Trans, k, n, alpha, b, ldb, a, incx, beta, c, 1);
        else
            scipy_cblas_sgemv(RowMajor, NoTrans, n, k, alpha, b, ldb, a, incx, beta, c, 1);
        forwarded++;
        return;
    }
    if (k > 0 && n == 1 && m > 1) {
        /* c[:, 0] = alpha * op(A) b_col + beta * c: op(A) is m x k. */
        int incx = (tb == NoTrans) ? ldb : 1;
        if (beta == 0.0f)
            for (int i = 0; i < m; i++) c[(long)i * ldc] = 0.0f;
        if (ta == NoTrans)
            scipy_cblas_sgemv(RowMajor, NoTrans, m, k, alpha, a, lda, b, incx, beta, c, ldc);
        else
            scipy_cblas_sgemv(RowMajor, Trans, k, m, alpha, a, lda, b, incx, beta, c, ldc);
        forwarded++;
        return;
    }
    scipy_cblas_sgemm(RowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
