/* OATH framing of raw all-sky-imager counts in one pass per frame: the compiled kernel of
 * aurora_pipeline.ingest.oath_kernel (read that module first; it calls this one function).
 *
 * For each uint16 frame (h, w) of a stack (n, h, w), exactly what the NumPy reference path
 * of aurora_pipeline.ingest.preprocess does, to the byte:
 *
 *   1. the two order statistics around each of two percentiles, from a histogram of the
 *      frame's counts (exact: the counts are integers), interpolated in float32:
 *      p = below + (above - below) * frac;
 *   2. eq. 1 in float32: a = (float(x) - p_low) / (p_high - p_low), clipped to [0, 1]; a frame
 *      whose p_high - p_low is not > 0 is flagged "flat" and left to the caller;
 *   3. uint8 levels by truncation, (uint8)(a * 255), 0 outside the sky (the caller's 0/1 mask);
 *   4. PIL's fixed-point bilinear resize (libImaging/Resample.c, 8 bits a pixel): a horizontal
 *      pass, each output rounded and clipped to uint8, then a vertical pass, with the integer
 *      weights the caller computed as PIL does (2^22 = 1); a 2x reduction (THEMIS's 256 -> 128),
 *      whose inner weights are (1, 3, 3, 1) / 8, as (a + 3 (b + c) + d + 4) >> 3, the same integers.
 *
 * SSE2 (every x86-64) does eq. 1 four pixels and the 2x passes eight or sixteen at a time; other
 * CPUs take the scalar loops, which are the reference for the same bytes.
 *
 * Built with -ffp-contract=off and without fast-math (setup.py), so no FMA: every float32 operation is IEEE single
 * precision, as NumPy's. The work runs without the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#define PRECISION_BITS (32 - 8 - 2)
#define HALF (1 << (PRECISION_BITS - 1))
#define NBINS 65536

static inline uint8_t clip8(int32_t in)
{
    if (in >= (1 << PRECISION_BITS << 8)) return 255;
    if (in <= 0) return 0;
    return (uint8_t)(in >> PRECISION_BITS);
}

/* The histogram of a frame's counts is kept as two halves (even and odd pixels: two chains of
 * increments instead of one, ~15% faster); a bin's count is the sum of both. */
static inline uint32_t count_at(const uint32_t *hist, uint32_t v)
{
    return hist[v] + hist[NBINS + v];
}

/* The r-th smallest value (0-based) of the frame, counting up from lo. */
static uint16_t rank_up(const uint32_t *hist, uint32_t lo, int64_t r)
{
    int64_t seen = 0;
    uint32_t v = lo;
    for (;;) {
        seen += count_at(hist, v);
        if (seen > r) return (uint16_t)v;
        v++;
    }
}

/* The r-th smallest value (0-based) of k values, counting down from hi. */
static uint16_t rank_down(const uint32_t *hist, uint32_t hi, int64_t k, int64_t r)
{
    int64_t above = 0;  /* values > v */
    uint32_t v = hi;
    while (above + count_at(hist, v) < k - r) {
        above += count_at(hist, v);
        v--;
    }
    return (uint16_t)v;
}

/* Smallest and largest count of the frame. */
static void count_range(const uint16_t *px, int64_t k, uint16_t *lo, uint16_t *hi)
{
    uint16_t mn = 65535, mx = 0;
    int64_t i = 0;
#ifdef __SSE2__
    /* SSE2 has signed 16-bit min and max: flip the sign bit, compare, flip back */
    const __m128i flip = _mm_set1_epi16((short)0x8000);
    __m128i vmin = _mm_set1_epi16(32767), vmax = _mm_set1_epi16(-32768);
    for (; i + 8 <= k; i += 8) {
        __m128i v = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(px + i)), flip);
        vmin = _mm_min_epi16(vmin, v);
        vmax = _mm_max_epi16(vmax, v);
    }
    int16_t lanes_min[8], lanes_max[8];
    _mm_storeu_si128((__m128i *)lanes_min, vmin);
    _mm_storeu_si128((__m128i *)lanes_max, vmax);
    for (int j = 0; j < 8 && i > 0; j++) {
        uint16_t a = (uint16_t)lanes_min[j] ^ 0x8000, b = (uint16_t)lanes_max[j] ^ 0x8000;
        mn = a < mn ? a : mn;
        mx = b > mx ? b : mx;
    }
#endif
    for (; i < k; i++) {
        mn = px[i] < mn ? px[i] : mn;
        mx = px[i] > mx ? px[i] : mx;
    }
    *lo = mn;
    *hi = mx;
}

static float interpolate(float below, float above, float frac)
{
    float d = above - below;
    float t = d * frac;
    return below + t;
}

#ifdef __SSE2__
/* Four float32 lanes of eq. 1 and the truncation: the scalar loop's operations one for one (max and
 * min differ from its comparisons only for -0.0, which truncates to the same 0). */
static inline __m128i levels4(__m128i counts, __m128 m, __m128 big)
{
    __m128 a = _mm_div_ps(_mm_sub_ps(_mm_cvtepi32_ps(counts), m), big);
    a = _mm_min_ps(_mm_max_ps(a, _mm_setzero_ps()), _mm_set1_ps(1.0f));
    return _mm_cvttps_epi32(_mm_mul_ps(a, _mm_set1_ps(255.0f)));
}

/* Eq. 1, truncation and sky mask (0x00 / 0xFF) over 16 pixels at a time; returns how many were done. */
static int64_t stretch_sse2(const uint16_t *px, int64_t k, const uint8_t *sky, float m, float big, uint8_t *levels)
{
    const __m128 vm = _mm_set1_ps(m), vbig = _mm_set1_ps(big);
    const __m128i zero = _mm_setzero_si128();
    int64_t i = 0;
    for (; i + 16 <= k; i += 16) {
        __m128i lo = _mm_loadu_si128((const __m128i *)(px + i));
        __m128i hi = _mm_loadu_si128((const __m128i *)(px + i + 8));
        __m128i l0 = levels4(_mm_unpacklo_epi16(lo, zero), vm, vbig);
        __m128i l1 = levels4(_mm_unpackhi_epi16(lo, zero), vm, vbig);
        __m128i l2 = levels4(_mm_unpacklo_epi16(hi, zero), vm, vbig);
        __m128i l3 = levels4(_mm_unpackhi_epi16(hi, zero), vm, vbig);
        __m128i bytes = _mm_packus_epi16(_mm_packs_epi32(l0, l1), _mm_packs_epi32(l2, l3));
        bytes = _mm_and_si128(bytes, _mm_loadu_si128((const __m128i *)(sky + i)));
        _mm_storeu_si128((__m128i *)(levels + i), bytes);
    }
    return i;
}
#endif

/* One frame's uint8 levels (h * w): eq. 1, truncation, the sky mask (0x00 or 0xFF a pixel).
 * Returns 1 for a flat frame (levels not written). */
static int frame_levels(const uint16_t *px, int64_t k, const uint8_t *sky, uint32_t *hist,
                        const int64_t ranks[4], const float fracs[2], uint8_t *levels)
{
    uint16_t lo, hi;
    count_range(px, k, &lo, &hi);
    uint32_t *odd = hist + NBINS;
    int64_t i = 0;
    for (; i + 2 <= k; i += 2) {
        hist[px[i]]++;
        odd[px[i + 1]]++;
    }
    if (i < k) hist[px[i]]++;
    float order[4];
    for (int j = 0; j < 4; j++) {
        int64_t r = ranks[j];
        order[j] = (float)(r < k / 2 ? rank_up(hist, lo, r) : rank_down(hist, hi, k, r));
    }
    memset(hist + lo, 0, ((size_t)hi - lo + 1) * sizeof(uint32_t));
    memset(odd + lo, 0, ((size_t)hi - lo + 1) * sizeof(uint32_t));
    float m = interpolate(order[0], order[1], fracs[0]);
    float top = interpolate(order[2], order[3], fracs[1]);
    float big = top - m;
    if (!(big > 0.0f)) return 1;
    i = 0;
#ifdef __SSE2__
    i = stretch_sse2(px, k, sky, m, big, levels);
#endif
    for (; i < k; i++) {
        float a = ((float)px[i] - m) / big;
        a = a < 0.0f ? 0.0f : a;
        a = a > 1.0f ? 1.0f : a;
        levels[i] = (uint8_t)((int32_t)(a * 255.0f)) & sky[i];
    }
    return 0;
}

/* True when PIL's filter is a 2x reduction: each inner output i reads inputs 2i - 1 .. 2i + 2 with
 * weights (1, 3, 3, 1) / 8 (PIL's integers, 2^22 = 1), so it is (a + 3 (b + c) + d + 4) >> 3. */
static int is_halving(int64_t n_in, int64_t n_out, const int32_t *first, const int32_t *weights, int64_t taps)
{
    if (n_in != 2 * n_out || n_out < 3 || taps < 4) return 0;
    for (int64_t i = 1; i < n_out - 1; i++) {
        const int32_t *k = weights + i * taps;
        if (first[i] != 2 * i - 1 || k[0] != 1 << 19 || k[1] != 3 << 19 || k[2] != 3 << 19 || k[3] != 1 << 19)
            return 0;
        for (int64_t t = 4; t < taps; t++)
            if (k[t]) return 0;
    }
    return 1;
}

/* PIL's horizontal pass of one output pixel of a row. */
static inline uint8_t tap_row(const uint8_t *row, int64_t x, const int32_t *first, const int32_t *weights, int64_t taps)
{
    const uint8_t *src = row + first[x];
    const int32_t *k = weights + x * taps;
    int32_t ss = HALF;
    for (int64_t t = 0; t < taps; t++) ss += src[t] * k[t];
    return clip8(ss);
}

/* PIL's horizontal pass of outputs [x0, x1) of a row, the filter's length a constant the compiler unrolls. */
#define TAP_ROW_N(N)                                                                                         \
    static void tap_row_##N(const uint8_t *row, int64_t x0, int64_t x1, const int32_t *first,               \
                            const int32_t *weights, uint8_t *dst)                                           \
    {                                                                                                        \
        for (int64_t x = x0; x < x1; x++) {                                                                 \
            const uint8_t *src = row + first[x];                                                             \
            const int32_t *k = weights + x * N;                                                              \
            int32_t ss = HALF;                                                                               \
            for (int t = 0; t < N; t++) ss += src[t] * k[t];                                                 \
            dst[x] = clip8(ss);                                                                              \
        }                                                                                                    \
    }
TAP_ROW_N(1)
TAP_ROW_N(2)
TAP_ROW_N(3)
TAP_ROW_N(4)
TAP_ROW_N(5)
TAP_ROW_N(6)
TAP_ROW_N(7)
TAP_ROW_N(8)

static void tap_row_span(const uint8_t *row, int64_t x0, int64_t x1, const int32_t *first, const int32_t *weights,
                         int64_t taps, uint8_t *dst)
{
    switch (taps) {
    case 1: tap_row_1(row, x0, x1, first, weights, dst); return;
    case 2: tap_row_2(row, x0, x1, first, weights, dst); return;
    case 3: tap_row_3(row, x0, x1, first, weights, dst); return;
    case 4: tap_row_4(row, x0, x1, first, weights, dst); return;
    case 5: tap_row_5(row, x0, x1, first, weights, dst); return;
    case 6: tap_row_6(row, x0, x1, first, weights, dst); return;
    case 7: tap_row_7(row, x0, x1, first, weights, dst); return;
    case 8: tap_row_8(row, x0, x1, first, weights, dst); return;
    default:
        for (int64_t x = x0; x < x1; x++) dst[x] = tap_row(row, x, first, weights, taps);
    }
}

/* Inner outputs [1, last) of a 2x horizontal reduction of one row, 8 at a time; returns the next x to do. */
static int64_t halve_row(const uint8_t *row, int64_t w, uint8_t *dst, int64_t last)
{
    int64_t x = 1;
#ifdef __SSE2__
    const __m128i low = _mm_set1_epi16(0x00FF), four = _mm_set1_epi16(4);
    for (; x + 8 <= last && 2 * x + 18 <= w; x += 8) {
        __m128i here = _mm_loadu_si128((const __m128i *)(row + 2 * x));       /* b | c << 8 per output */
        __m128i before = _mm_loadu_si128((const __m128i *)(row + 2 * x - 2)); /* a in the high bytes */
        __m128i after = _mm_loadu_si128((const __m128i *)(row + 2 * x + 2));  /* d in the low bytes */
        __m128i mid = _mm_add_epi16(_mm_and_si128(here, low), _mm_srli_epi16(here, 8));
        __m128i sum = _mm_add_epi16(_mm_add_epi16(mid, _mm_add_epi16(mid, mid)),
                                    _mm_add_epi16(_mm_srli_epi16(before, 8), _mm_and_si128(after, low)));
        sum = _mm_srli_epi16(_mm_add_epi16(sum, four), 3);
        _mm_storel_epi64((__m128i *)(dst + x), _mm_packus_epi16(sum, sum));
    }
#endif
    for (; x < last; x++)
        dst[x] = (uint8_t)((row[2 * x - 1] + 3 * (row[2 * x] + row[2 * x + 1]) + row[2 * x + 2] + 4) >> 3);
    return x;
}

/* Output row y (inner) of a 2x vertical reduction of (2 s, s) rows into dst (s). */
static void halve_columns(const uint8_t *wide, int64_t s, int64_t y, uint8_t *dst)
{
    const uint8_t *a = wide + (2 * y - 1) * s, *b = a + s, *c = b + s, *d = c + s;
    int64_t x = 0;
#ifdef __SSE2__
    const __m128i zero = _mm_setzero_si128(), four = _mm_set1_epi16(4);
    for (; x + 16 <= s; x += 16) {
        __m128i va = _mm_loadu_si128((const __m128i *)(a + x)), vb = _mm_loadu_si128((const __m128i *)(b + x));
        __m128i vc = _mm_loadu_si128((const __m128i *)(c + x)), vd = _mm_loadu_si128((const __m128i *)(d + x));
        __m128i half[2];
        for (int part = 0; part < 2; part++) {
            __m128i pa = part ? _mm_unpackhi_epi8(va, zero) : _mm_unpacklo_epi8(va, zero);
            __m128i pb = part ? _mm_unpackhi_epi8(vb, zero) : _mm_unpacklo_epi8(vb, zero);
            __m128i pc = part ? _mm_unpackhi_epi8(vc, zero) : _mm_unpacklo_epi8(vc, zero);
            __m128i pd = part ? _mm_unpackhi_epi8(vd, zero) : _mm_unpacklo_epi8(vd, zero);
            __m128i mid = _mm_add_epi16(pb, pc);
            __m128i sum = _mm_add_epi16(_mm_add_epi16(mid, _mm_add_epi16(mid, mid)), _mm_add_epi16(pa, pd));
            half[part] = _mm_srli_epi16(_mm_add_epi16(sum, four), 3);
        }
        _mm_storeu_si128((__m128i *)(dst + x), _mm_packus_epi16(half[0], half[1]));
    }
#endif
    for (; x < s; x++) dst[x] = (uint8_t)((a[x] + 3 * (b[x] + c[x]) + d[x] + 4) >> 3);
}

/* PIL's vertical pass of one output row y. */
static void tap_columns(const uint8_t *wide, int64_t s, int64_t y, const int32_t *first, const int32_t *weights,
                        int64_t taps, int32_t *acc, uint8_t *dst)
{
    const int32_t *k = weights + y * taps;
    for (int64_t x = 0; x < s; x++) acc[x] = HALF;
    for (int64_t t = 0; t < taps; t++) {
        if (k[t] == 0) continue;
        const uint8_t *src = wide + (first[y] + t) * s;
        int32_t kt = k[t];
        for (int64_t x = 0; x < s; x++) acc[x] += src[x] * kt;
    }
    for (int64_t x = 0; x < s; x++) dst[x] = clip8(acc[x]);
}

/* A filter along one axis: PIL's first inputs and integer weights, and whether it is a 2x reduction. */
typedef struct {
    const int32_t *first, *weights;
    int64_t taps;
    int halving;
} Filter;

/* PIL's horizontal pass: (h, w) -> (h, s) into wide, then its vertical pass: (h, s) -> (s, s) into out. */
static void resize_frame(const uint8_t *levels, int64_t h, int64_t w, int64_t s, const Filter *fx, const Filter *fy,
                         uint8_t *wide, int32_t *acc, uint8_t *out)
{
    for (int64_t y = 0; y < h; y++) {
        const uint8_t *row = levels + y * w;
        uint8_t *dst = wide + y * s;
        int64_t x = 0;
        if (fx->halving) {
            dst[0] = tap_row(row, 0, fx->first, fx->weights, fx->taps);
            x = halve_row(row, w, dst, s - 1);
        }
        tap_row_span(row, x, s, fx->first, fx->weights, fx->taps, dst);
    }
    for (int64_t y = 0; y < s; y++) {
        if (fy->halving && y > 0 && y < s - 1)
            halve_columns(wide, s, y, out + y * s);
        else
            tap_columns(wide, s, y, fy->first, fy->weights, fy->taps, acc, out + y * s);
    }
}

static int need(Py_buffer *b, Py_ssize_t bytes, const char *what)
{
    if (b->len != bytes) {
        PyErr_Format(PyExc_ValueError, "_oath_framing: %s has %zd bytes, expected %zd", what, b->len, bytes);
        return 0;
    }
    return 1;
}

PyDoc_STRVAR(frames_doc,
"frames(raw, n, h, w, sky, ranks, fracs, s, xfirst, xweights, xtaps, yfirst, yweights, ytaps, out, flat)\n\n"
"OATH framing of n uint16 frames (h, w) in ``raw`` into uint8 (s, s) frames in ``out``; ``flat[i]``\n"
"is set to 1 for a frame with no contrast (left for the caller). See aurora_pipeline.ingest.oath_kernel.");

static PyObject *frames(PyObject *self, PyObject *args)
{
    Py_buffer raw, sky, ranks, fracs, xfirst, xweights, yfirst, yweights, out, flat;
    Py_ssize_t n, h, w, s, xtaps, ytaps;
    if (!PyArg_ParseTuple(args, "y*nnny*y*y*ny*y*ny*y*nw*w*", &raw, &n, &h, &w, &sky, &ranks, &fracs, &s,
                          &xfirst, &xweights, &xtaps, &yfirst, &yweights, &ytaps, &out, &flat))
        return NULL;
    PyObject *result = NULL;
    uint32_t *hist = NULL;
    uint8_t *levels = NULL, *wide = NULL, *skymask = NULL;
    int32_t *acc = NULL;
    const int32_t *xf = xfirst.buf, *yf = yfirst.buf;
    const int64_t *rk = ranks.buf;
    if (n < 0 || h < 1 || w < 1 || s < 1 || xtaps < 1 || ytaps < 1 || h > 4096 || w > 4096 || s > 4096) {
        PyErr_SetString(PyExc_ValueError, "_oath_framing: sizes out of range");
        goto done;
    }
    if (!need(&raw, n * h * w * 2, "raw") || !need(&sky, h * w, "sky") || !need(&ranks, 4 * 8, "ranks")
        || !need(&fracs, 2 * 4, "fracs") || !need(&xfirst, s * 4, "xfirst") || !need(&xweights, s * xtaps * 4, "xweights")
        || !need(&yfirst, s * 4, "yfirst") || !need(&yweights, s * ytaps * 4, "yweights")
        || !need(&out, n * s * s, "out") || !need(&flat, n, "flat"))
        goto done;
    for (Py_ssize_t i = 0; i < s; i++) {
        if (xf[i] < 0 || xf[i] + xtaps > w || yf[i] < 0 || yf[i] + ytaps > h) {
            PyErr_SetString(PyExc_ValueError, "_oath_framing: a filter reaches outside the frame");
            goto done;
        }
    }
    for (int j = 0; j < 4; j++) {
        if (rk[j] < 0 || rk[j] >= h * w) {
            PyErr_SetString(PyExc_ValueError, "_oath_framing: a rank outside the frame");
            goto done;
        }
    }
    hist = calloc(2 * NBINS, sizeof(uint32_t));
    levels = malloc((size_t)(h * w));
    wide = malloc((size_t)(h * s));
    acc = malloc((size_t)s * sizeof(int32_t));
    skymask = malloc((size_t)(h * w));
    if (!hist || !levels || !wide || !acc || !skymask) {
        PyErr_NoMemory();
        goto done;
    }
    const uint8_t *sky01 = sky.buf;
    for (Py_ssize_t i = 0; i < h * w; i++) skymask[i] = sky01[i] ? 0xFF : 0x00;
    Filter fx = {xf, xweights.buf, xtaps, is_halving(w, s, xf, xweights.buf, xtaps)};
    Filter fy = {yf, yweights.buf, ytaps, is_halving(h, s, yf, yweights.buf, ytaps)};
    Py_BEGIN_ALLOW_THREADS
    const uint16_t *px = raw.buf;
    uint8_t *dst = out.buf, *fl = flat.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        fl[i] = (uint8_t)frame_levels(px + i * h * w, h * w, skymask, hist, rk, fracs.buf, levels);
        if (fl[i]) {
            memset(dst + i * s * s, 0, (size_t)(s * s));
            continue;
        }
        resize_frame(levels, h, w, s, &fx, &fy, wide, acc, dst + i * s * s);
    }
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    free(hist);
    free(levels);
    free(wide);
    free(acc);
    free(skymask);
    PyBuffer_Release(&raw);
    PyBuffer_Release(&sky);
    PyBuffer_Release(&ranks);
    PyBuffer_Release(&fracs);
    PyBuffer_Release(&xfirst);
    PyBuffer_Release(&xweights);
    PyBuffer_Release(&yfirst);
    PyBuffer_Release(&yweights);
    PyBuffer_Release(&out);
    PyBuffer_Release(&flat);
    return result;
}

static PyMethodDef methods[] = {
    {"frames", frames, METH_VARARGS, frames_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_oath_framing",
    "OATH framing of raw counts in one pass per frame (see aurora_pipeline.ingest.oath_kernel).", -1, methods,
};

PyMODINIT_FUNC PyInit__oath_framing(void)
{
    return PyModule_Create(&module);
}
