"""Depthwise input-gradient kernel: a direct gather, no GEMM, no column buffer.

Everything here trusts its arguments: shapes, strides, dtypes and sizes are validated by the
Python engine (``convbp/_engine.py``).  Arrays arrive in a *logical* NHWC order of axes -- an
NCHW array is passed as ``arr.transpose(0, 2, 3, 1)``, a view -- and are read and written
through their strides, so no layout is ever transposed in memory.

Each input-gradient element is computed once, by one work unit, as a sum over the output pixels
and multiplier channels that read it, in an order fixed by the geometry.  Units never share
output memory and their partition does not change any element's order of summation, so results
are bitwise identical for any number of threads.  Which taps reach each input row and column
is tabulated once per call, so the per-pixel work has no divisions, and so is each run of
pixels (rows) whose taps are the first's shifted by whole output pixels (rows): a run shares
one tap list and one call of the sums in ``_simd.h``, which hold several outputs per register
in the widest vectors the machine has (AVX-512, AVX2 or SSE2 clones picked at load time) and
add each element's taps in list order.  Two loop orders, chosen by dx's memory:

* channels inner (NHWC memory): a unit is one input row of one image; for each run of pixels
  the taps (output pixel, filter tap) are listed, and every one of the C*multiplier channels is
  summed over them, each channel with its own filter tap, several channel blocks (or two
  pixels) at a time;
* width inner (NCHW memory): a unit is one channel plane of one image; the columns of a row split
  into stride phases, within which every tap is a unit-stride run of an out_backprop row times
  one filter value, summed in blocks over the phase's interior (two rows at a time); the few
  edge columns where some taps fall outside out_backprop are summed down the run of rows, tap
  by tap -- or, for wide filters, out_backprop is first copied with zero columns around it so
  that every column is interior.
"""

from cython cimport floating
from cython.parallel cimport prange, threadid


cdef struct DwGeometry:
    # Logical sizes: input gradient (H, W, C), out_backprop (OH, OW, C*M), filter (KH, KW, C*M).
    Py_ssize_t H, W, C, M, OH, OW, KH, KW
    Py_ssize_t stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left


include "_index.pxi"


cdef Py_ssize_t _taps(Py_ssize_t r, Py_ssize_t K, Py_ssize_t d, Py_ssize_t s, Py_ssize_t O,
                      Py_ssize_t* ks, Py_ssize_t* os) noexcept nogil:
    """The taps k < K with r - k*d = o*s for an output index 0 <= o < O, in increasing k.

    r is the input index plus the leading padding.  Writes k to ks and o to os; returns the count.
    """
    cdef Py_ssize_t k, t, n = 0
    for k in range(K):
        t = r - k * d
        if t >= 0 and t % s == 0 and t < O * s:
            ks[n] = k
            os[n] = t // s
            n += 1
    return n


cdef Py_ssize_t _phase_taps(Py_ssize_t r, Py_ssize_t K, Py_ssize_t d, Py_ssize_t s,
                            Py_ssize_t* ks, Py_ssize_t* os) noexcept nogil:
    """The taps k < K with r - k*d divisible by s (any sign); o = (r - k*d) / s.  Returns the
    count.

    For the input columns r - pad_left + s*i (one phase of the stride), tap k reads output
    column o + i; whether that is inside [0, OW) is left to the caller.
    """
    cdef Py_ssize_t k, t, n = 0
    for k in range(K):
        t = r - k * d
        if t % s == 0:
            ks[n] = k
            os[n] = t // s
            n += 1
    return n


# ---------------------------------------------------------------------------------------------
# Sums over a list of taps, in _simd.h: several outputs at once in the widest registers the
# machine has; each element summed over its taps in list order, ((p0 + p1) + p2) + ...

cdef extern from "_simd.h" nogil:
    void convbp_dw_width_f32(float* out, Py_ssize_t step, Py_ssize_t out_row, Py_ssize_t n_rows,
                             const float* src, Py_ssize_t src_row, Py_ssize_t lo, Py_ssize_t hi,
                             Py_ssize_t count, Py_ssize_t OW, Py_ssize_t n_taps,
                             const Py_ssize_t* off, const Py_ssize_t* ow0, const float* wv,
                             float* col)
    void convbp_dw_width_f64(double* out, Py_ssize_t step, Py_ssize_t out_row, Py_ssize_t n_rows,
                             const double* src, Py_ssize_t src_row, Py_ssize_t lo, Py_ssize_t hi,
                             Py_ssize_t count, Py_ssize_t OW, Py_ssize_t n_taps,
                             const Py_ssize_t* off, const Py_ssize_t* ow0, const double* wv,
                             double* col)
    void convbp_dw_channels_f32(float* out, Py_ssize_t out_step, Py_ssize_t n_pix,
                                Py_ssize_t src_step, Py_ssize_t F, Py_ssize_t n_taps,
                                const float* src, const Py_ssize_t* s_off,
                                const float* filt, const Py_ssize_t* w_off)
    void convbp_dw_channels_f64(double* out, Py_ssize_t out_step, Py_ssize_t n_pix,
                                Py_ssize_t src_step, Py_ssize_t F, Py_ssize_t n_taps,
                                const double* src, const Py_ssize_t* s_off,
                                const double* filt, const Py_ssize_t* w_off)


cdef inline void _sum_width(floating* out, Py_ssize_t step, Py_ssize_t out_row,
                            Py_ssize_t n_rows, const floating* src, Py_ssize_t src_row,
                            Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t count, Py_ssize_t OW,
                            Py_ssize_t n_taps, const Py_ssize_t* off, const Py_ssize_t* ow0,
                            const floating* wv, floating* col) noexcept nogil:
    """For rows r < n_rows (out + r*out_row, src + r*src_row) and columns i < count:
    out[i*step] = sum over taps t with 0 <= ow0[t] + i < OW of src[off[t] + i] * wv[t]; every
    tap is in range on lo <= i < hi.  col: n_rows elements of scratch."""
    if floating is float:
        convbp_dw_width_f32(out, step, out_row, n_rows, src, src_row, lo, hi, count, OW, n_taps,
                            off, ow0, wv, col)
    else:
        convbp_dw_width_f64(out, step, out_row, n_rows, src, src_row, lo, hi, count, OW, n_taps,
                            off, ow0, wv, col)


cdef inline void _sum_channels(floating* out, Py_ssize_t out_step, Py_ssize_t n_pix,
                               Py_ssize_t src_step, Py_ssize_t F, Py_ssize_t n_taps,
                               const floating* src, const Py_ssize_t* s_off,
                               const floating* filt, const Py_ssize_t* w_off) noexcept nogil:
    """out[p*out_step + j] = sum over taps t of src[p*src_step + s_off[t] + j]
    * filt[w_off[t] + j], for pixels p < n_pix and channels j < F."""
    if floating is float:
        convbp_dw_channels_f32(out, out_step, n_pix, src_step, F, n_taps, src, s_off, filt,
                               w_off)
    else:
        convbp_dw_channels_f64(out, out_step, n_pix, src_step, F, n_taps, src, s_off, filt,
                               w_off)


# ---------------------------------------------------------------------------------------------
# Channels inner.

cdef void _row_channels_inner(const DwGeometry* g, const Py_ssize_t* row_taps,
                              const Py_ssize_t* col_taps, Py_ssize_t col_ld,
                              const floating* dy, Py_ssize_t sdh, Py_ssize_t sdw,
                              const floating* filt,
                              floating* dx, Py_ssize_t sxw, Py_ssize_t sxc,
                              floating* acc, Py_ssize_t* tap) noexcept nogil:
    """One input-gradient row of one image; dy is the image (unit channel stride), dx the row.

    row_taps is the row's (count, kh..., oh...) and col_taps + iw*col_ld each column's (count,
    kw..., ow..., run).  For each pixel the taps (output pixel, filter tap) are listed in
    (kh, kw) order; acc[f] for every out_backprop channel f = c*M + m is their sum, and
    dx[c] = sum_m acc[c*M + m].  The run of pixels iw, iw + stride_w, ... whose taps are iw's
    shifted by 0, 1, ... output columns (the interior of each stride phase) shares one tap list
    and one call.  With M == 1 and unit channel stride, dx itself is the accumulator.
    """
    cdef Py_ssize_t F = g.C * g.M, M = g.M, KH = g.KH, KW = g.KW, S = g.stride_w, W = g.W
    cdef Py_ssize_t n_kh = row_taps[0]
    cdef const Py_ssize_t* kh_of = row_taps + 1
    cdef const Py_ssize_t* oh_of = row_taps + 1 + KH
    cdef const Py_ssize_t* kw_of
    cdef const Py_ssize_t* ow_of
    cdef Py_ssize_t* d_off = tap
    cdef Py_ssize_t* w_off = tap + KH * KW
    cdef Py_ssize_t n_kw, n_taps, a, b, iw, c, m, p, r, run
    cdef bint direct = M == 1 and sxc == 1
    cdef const floating* src
    cdef floating* out
    cdef floating s

    for p in range(min(S, W)):
        iw = p
        while iw < W:
            n_kw = col_taps[iw * col_ld]
            kw_of = col_taps + iw * col_ld + 1
            ow_of = kw_of + KW
            run = ow_of[KW]
            # Offsets relative to the pixel's first tap.
            n_taps = 0
            for a in range(n_kh):
                for b in range(n_kw):
                    d_off[n_taps] = (oh_of[a] - oh_of[0]) * sdh + (ow_of[b] - ow_of[0]) * sdw
                    w_off[n_taps] = (kh_of[a] * KW + kw_of[b]) * F
                    n_taps += 1
            src = dy + ((oh_of[0] * sdh + ow_of[0] * sdw) if n_taps > 0 else 0)
            out = dx + iw * sxw
            if direct:
                _sum_channels(out, S * sxw, run, sdw, F, n_taps, src, d_off, filt, w_off)
            else:
                for r in range(run):
                    _sum_channels(acc, 0, 1, 0, F, n_taps, src + r * sdw, d_off, filt, w_off)
                    if M == 1:
                        for c in range(g.C):
                            out[c * sxc] = acc[c]
                    else:
                        for c in range(g.C):
                            s = acc[c * M]
                            for m in range(1, M):
                                s = s + acc[c * M + m]
                            out[c * sxc] = s
                    out += S * sxw
            iw += run * S


# ---------------------------------------------------------------------------------------------
# Width inner.

cdef void _plane_width_inner(const DwGeometry* g, Py_ssize_t c,
                             const Py_ssize_t* row_taps, Py_ssize_t row_ld,
                             const Py_ssize_t* phase_taps, Py_ssize_t phase_ld,
                             Py_ssize_t n_phases, Py_ssize_t pad_l, Py_ssize_t PW,
                             const floating* dy, Py_ssize_t sdh, Py_ssize_t sdf,
                             const floating* filt,
                             floating* dx, Py_ssize_t sxh, Py_ssize_t sxw,
                             floating* work, Py_ssize_t* tap) noexcept nogil:
    """Input-gradient plane of channel c of one image; dy is the image (unit width stride), dx
    the plane.

    The columns of a row split into stride phases iw = p + stride_w*i.  Within a phase the valid
    kw are fixed (phase_taps + p*phase_ld: n_kw, lo, hi, count, kw..., ow0...) and tap kw reads
    column ow0 + i, so the row's taps, listed in (m, kh, kw) order, are runs of out_backprop rows
    at unit stride, summed in blocks over the interior lo <= i < hi (where every tap is in
    range); the columns outside it are summed one by one, skipping taps out of range.  The rows
    ih, ih + stride_h, ... whose taps are ih's shifted by 0, 1, ... output rows (row_taps: count,
    kh..., oh..., run) share ih's tap lists and one call per phase.

    With PW > 0 the channel's out_backprop planes are first copied into work, rows of PW with
    pad_l zeros before and the rest after, wide enough that every column of every phase is
    interior: taps outside out_backprop then add zero products (the caller checked the filter
    is finite, so those are zeros and the sums are the same, up to the sign of a zero sum).
    """
    cdef Py_ssize_t F = g.C * g.M, KH = g.KH, KW = g.KW, T = g.M * g.KH * g.KW
    cdef Py_ssize_t S = g.stride_h, H = g.H
    cdef Py_ssize_t n_kh, n_kw, n_taps, a, b, ih, q, p, m, f, step, run
    cdef const Py_ssize_t* kh_of
    cdef const Py_ssize_t* oh_of
    cdef const Py_ssize_t* kw_of
    cdef const Py_ssize_t* ow_of
    cdef const Py_ssize_t* pt
    cdef Py_ssize_t* d_off = tap
    cdef Py_ssize_t* ow0 = tap + T
    cdef floating* wv = work
    cdef floating* fc = work + T
    cdef floating* col = fc + T
    cdef floating* pbuf = col + H
    cdef floating* prow
    cdef const floating* src
    cdef const floating* base = dy
    cdef Py_ssize_t rs = sdh, fs = sdf, f0 = c * g.M, shift = 0, oh, ow

    step = g.stride_w * sxw
    # This channel's filter taps, gathered once: fc[(kh*KW + kw)*M + m].
    for a in range(KH * KW):
        for m in range(g.M):
            fc[a * g.M + m] = filt[a * F + c * g.M + m]
    if PW > 0:
        for m in range(g.M):
            for oh in range(g.OH):
                prow = pbuf + (m * g.OH + oh) * PW
                for ow in range(pad_l):
                    prow[ow] = 0
                for ow in range(g.OW):
                    prow[pad_l + ow] = dy[(c * g.M + m) * sdf + oh * sdh + ow]
                for ow in range(pad_l + g.OW, PW):
                    prow[ow] = 0
        base, rs, fs, f0, shift = pbuf, PW, g.OH * PW, 0, pad_l
    for q in range(min(S, H)):
        ih = q
        while ih < H:
            n_kh = row_taps[ih * row_ld]
            kh_of = row_taps + ih * row_ld + 1
            oh_of = kh_of + KH
            run = oh_of[KH]
            src = base + (oh_of[0] * rs if n_kh > 0 else 0)
            for p in range(n_phases):
                pt = phase_taps + p * phase_ld
                n_kw = pt[0]
                kw_of = pt + 4
                ow_of = kw_of + KW
                # Offsets relative to src, the row's first tap row.
                n_taps = 0
                for m in range(g.M):
                    f = f0 + m
                    for a in range(n_kh):
                        for b in range(n_kw):
                            d_off[n_taps] = (oh_of[a] - oh_of[0]) * rs + f * fs + ow_of[b] + shift
                            ow0[n_taps] = ow_of[b]
                            wv[n_taps] = fc[(kh_of[a] * KW + kw_of[b]) * g.M + m]
                            n_taps += 1
                if PW > 0:  # every column interior
                    _sum_width(dx + ih * sxh + p * sxw, step, S * sxh, run, src, rs,
                               0, pt[3], pt[3], g.OW, n_taps, d_off, ow0, wv, col)
                else:
                    _sum_width(dx + ih * sxh + p * sxw, step, S * sxh, run, src, rs,
                               pt[1], pt[2], pt[3], g.OW, n_taps, d_off, ow0, wv, col)
            ih += run * S


cdef void _mark_runs(Py_ssize_t[:, ::1] taps, Py_ssize_t count, Py_ssize_t step,
                     Py_ssize_t K) noexcept nogil:
    """taps[i, 1 + 2K] = length of the run i, i + step, ... of input rows (or columns) whose tap
    lists (count taps[i, 0], taps taps[i, 1:], output positions taps[i, 1+K:]) are i's shifted
    by 0, 1, ... output positions."""
    cdef Py_ssize_t i, b
    cdef bint same
    for i in range(count - 1, -1, -1):
        taps[i, 1 + 2 * K] = 1
        if i + step >= count or taps[i + step, 0] != taps[i, 0]:
            continue
        same = True
        for b in range(taps[i, 0]):
            if (taps[i + step, 1 + b] != taps[i, 1 + b]
                    or taps[i + step, 1 + K + b] != taps[i, 1 + K + b] + 1):
                same = False
                break
        if same:
            taps[i, 1 + 2 * K] = 1 + taps[i + step, 1 + 2 * K]


def backprop_input(const floating[:, :, :, :] dy,
                   const floating[:, :, ::1] filt,
                   floating[:, :, :, :] dx,
                   floating[:, ::1] workspace,
                   Py_ssize_t[:, ::1] taps,
                   Py_ssize_t[:, ::1] row_taps,
                   Py_ssize_t[:, ::1] col_taps,
                   DwGeometry g,
                   bint channels_inner,
                   Py_ssize_t pad_l,
                   Py_ssize_t PW,
                   int num_threads):
    """Input gradient of a depthwise 2-D convolution, written into dx.

    dy          IN   (N, OH, OW, C*M) logical axes, any strides except that the inner axis
                     (channels if channels_inner, else width) has unit stride or length 1
    filt        IN   (KH, KW, C*M): the filter (KH, KW, C, M) with its last two axes merged
    dx          OUT  (N, H, W, C) logical axes, any strides, fully overwritten
    workspace   --   per thread: (num_threads, >= C*M) if channels_inner,
                     else (num_threads, >= 2*M*KH*KW + H + M*OH*PW)
    taps        --   per thread: (num_threads, >= 2*KH*KW) if channels_inner,
                     else (num_threads, >= 2*M*KH*KW) tap lists
    row_taps    --   (H, 2 + 2*KH) filled here: each input row's taps and run
    col_taps    --   filled here: (W, 2 + 2*KW) each input column's taps and run if
                     channels_inner, else (min(stride_w, W), 4 + 2*KW) each stride phase's
                     taps and interior
    channels_inner   loop order: True for dx contiguous along channels, False along width
    pad_l, PW        width inner: copy each channel's out_backprop into rows of PW with pad_l
                     zeros in front, every column then interior (filter must be finite);
                     PW = 0: read out_backprop in place, edge columns summed apart
    """
    cdef Py_ssize_t isz = sizeof(floating)
    cdef Py_ssize_t N = dx.shape[0]
    cdef Py_ssize_t per_image = g.H if channels_inner else g.C
    cdef Py_ssize_t unit, n, k, tid, i, b, lo, hi, n_kw, chunk
    cdef Py_ssize_t sdh = dy.strides[1] // isz, sdw = dy.strides[2] // isz
    cdef Py_ssize_t sdf = dy.strides[3] // isz
    cdef Py_ssize_t sxh = dx.strides[1] // isz, sxw = dx.strides[2] // isz
    cdef Py_ssize_t sxc = dx.strides[3] // isz
    if N == 0 or per_image == 0:
        return
    with nogil:
        # Tap tables, computed once: which kh (kw) reach each input row (column or phase).
        for i in range(g.H):
            row_taps[i, 0] = _taps(i + g.pad_top, g.KH, g.dilation_h, g.stride_h, g.OH,
                                   &row_taps[i, 1], &row_taps[i, 1 + g.KH])
        for i in range(col_taps.shape[0]):
            if channels_inner:
                col_taps[i, 0] = _taps(i + g.pad_left, g.KW, g.dilation_w, g.stride_w, g.OW,
                                       &col_taps[i, 1], &col_taps[i, 1 + g.KW])
                continue
            n_kw = _phase_taps(i + g.pad_left, g.KW, g.dilation_w, g.stride_w,
                               &col_taps[i, 4], &col_taps[i, 4 + g.KW])
            # Interior of the phase: 0 <= ow0 + i' < OW for every valid kw.
            lo, hi = 0, _ceil_div(g.W - i, g.stride_w)
            for b in range(n_kw):
                lo = max(lo, -col_taps[i, 4 + g.KW + b])
                hi = min(hi, g.OW - col_taps[i, 4 + g.KW + b])
            if n_kw == 0 or hi < lo:
                hi = lo
            col_taps[i, 0], col_taps[i, 1], col_taps[i, 2] = n_kw, lo, hi
            col_taps[i, 3] = _ceil_div(g.W - i, g.stride_w)
        # Channels inner: the run of columns i, i + stride_w, ... whose taps are i's shifted by
        # 0, 1, ... output columns.
        if channels_inner:
            _mark_runs(col_taps, g.W, g.stride_w, g.KW)
        # Width inner: the run of rows i, i + stride_h, ... whose taps are i's shifted by 0, 1,
        # ... output rows.
        _mark_runs(row_taps, g.H, g.stride_h, g.KH)
    # Consecutive units (neighbouring rows share out_backprop rows) go to one thread together.
    chunk = max(1, min(per_image, N * per_image // (4 * num_threads)))
    for unit in prange(N * per_image, nogil=True, num_threads=num_threads, schedule='dynamic',
                       chunksize=chunk):
        n = unit // per_image
        k = unit - n * per_image
        tid = threadid()
        if channels_inner:
            _row_channels_inner(&g, &row_taps[k, 0], &col_taps[0, 0], col_taps.shape[1],
                                &dy[n, 0, 0, 0], sdh, sdw,
                                &filt[0, 0, 0], &dx[n, k, 0, 0], sxw, sxc,
                                &workspace[tid, 0], &taps[tid, 0])
        else:
            _plane_width_inner(&g, k, &row_taps[0, 0], row_taps.shape[1], &col_taps[0, 0],
                               col_taps.shape[1], col_taps.shape[0], pad_l, PW,
                               &dy[n, 0, 0, 0], sdh, sdf,
                               &filt[0, 0, 0], &dx[n, 0, 0, k], sxh, sxw,
                               &workspace[tid, 0], &taps[tid, 0])


# ---------------------------------------------------------------------------------------------
# Forward and filter gradient: direct loops over runs of output pixels.  A work unit is a run of
# consecutive output pixels in the flat (image, row, column) order, walked row segment by row
# segment; in each, every output element (forward) or filter tap (filter gradient) sums its
# products in (kh, kw) order, then (channels inner) pixel order.

cdef inline void _valid_columns(const DwGeometry* g, Py_ssize_t kw, Py_ssize_t ow_a,
                                Py_ssize_t ow_b, Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """[lo, hi): the output columns ow in [ow_a, ow_b) whose tap kw lands inside the input."""
    cdef Py_ssize_t off = kw * g.dilation_w - g.pad_left
    lo[0] = max(ow_a, _ceil_div(-off, g.stride_w))
    hi[0] = min(ow_b, _floor_div(g.W - 1 - off, g.stride_w) + 1)
    if hi[0] < lo[0]:
        hi[0] = lo[0]


cdef void _forward_segment(const DwGeometry* g, bint channels_inner,
                           const floating* x, Py_ssize_t sxh, Py_ssize_t sxw, Py_ssize_t sxc,
                           const floating* filt, floating* y, Py_ssize_t syw, Py_ssize_t syf,
                           Py_ssize_t oh, Py_ssize_t ow_a, Py_ssize_t ow_b,
                           floating* acc) noexcept nogil:
    """y[oh, ow_a:ow_b, :] of one image; x is the image, y its row oh.  acc: scratch of C*M
    (channels inner) or ow_b - ow_a (width inner) elements."""
    cdef Py_ssize_t F = g.C * g.M, M = g.M, KW = g.KW
    cdef Py_ssize_t ih0 = oh * g.stride_h - g.pad_top
    cdef Py_ssize_t ow, iw, ih, kh, kw, c, m, f, j, lo, hi, step = g.stride_w * sxw
    cdef const floating* xp
    cdef const floating* wp
    cdef floating* a
    cdef floating v
    if channels_inner:
        for ow in range(ow_a, ow_b):
            for f in range(F):
                acc[f] = 0
            for kh in range(g.KH):
                ih = ih0 + kh * g.dilation_h
                if ih < 0 or ih >= g.H:
                    continue
                for kw in range(KW):
                    iw = ow * g.stride_w - g.pad_left + kw * g.dilation_w
                    if iw < 0 or iw >= g.W:
                        continue
                    xp = x + ih * sxh + iw * sxw
                    wp = filt + (kh * KW + kw) * F
                    if M == 1 and sxc == 1:
                        for c in range(g.C):
                            acc[c] += xp[c] * wp[c]
                    else:
                        for c in range(g.C):
                            v = xp[c * sxc]
                            for m in range(M):
                                acc[c * M + m] += v * wp[c * M + m]
            for f in range(F):
                y[ow * syw + f * syf] = acc[f]
        return
    for c in range(g.C):
        for m in range(M):
            f = c * M + m
            for j in range(ow_b - ow_a):
                acc[j] = 0
            for kh in range(g.KH):
                ih = ih0 + kh * g.dilation_h
                if ih < 0 or ih >= g.H:
                    continue
                for kw in range(KW):
                    _valid_columns(g, kw, ow_a, ow_b, &lo, &hi)
                    v = filt[(kh * KW + kw) * F + f]
                    xp = x + ih * sxh + c * sxc + (lo * g.stride_w - g.pad_left
                                                   + kw * g.dilation_w) * sxw
                    a = acc + lo - ow_a
                    if step == 1:
                        for j in range(hi - lo):
                            a[j] += xp[j] * v
                    else:
                        for j in range(hi - lo):
                            a[j] += xp[j * step] * v
            for j in range(ow_b - ow_a):
                y[(ow_a + j) * syw + f * syf] = acc[j]


cdef void _filter_segment(const DwGeometry* g, bint channels_inner,
                          const floating* x, Py_ssize_t sxh, Py_ssize_t sxw, Py_ssize_t sxc,
                          const floating* dy, Py_ssize_t sdw, Py_ssize_t sdf,
                          Py_ssize_t oh, Py_ssize_t ow_a, Py_ssize_t ow_b,
                          floating* part) noexcept nogil:
    """Add the filter gradient of output pixels (oh, ow_a:ow_b) of one image into part
    (KH, KW, C*M); x is the image, dy its row oh."""
    cdef Py_ssize_t F = g.C * g.M, M = g.M, KW = g.KW
    cdef Py_ssize_t ih0 = oh * g.stride_h - g.pad_top
    cdef Py_ssize_t ow, iw, ih, kh, kw, c, m, f, j, lo, hi, step = g.stride_w * sxw
    cdef const floating* xp
    cdef const floating* dp
    cdef floating* pp
    cdef floating v, s
    if channels_inner:
        for ow in range(ow_a, ow_b):
            dp = dy + ow * sdw
            for kh in range(g.KH):
                ih = ih0 + kh * g.dilation_h
                if ih < 0 or ih >= g.H:
                    continue
                for kw in range(KW):
                    iw = ow * g.stride_w - g.pad_left + kw * g.dilation_w
                    if iw < 0 or iw >= g.W:
                        continue
                    xp = x + ih * sxh + iw * sxw
                    pp = part + (kh * KW + kw) * F
                    if M == 1 and sxc == 1 and sdf == 1:
                        for c in range(g.C):
                            pp[c] += xp[c] * dp[c]
                    else:
                        for c in range(g.C):
                            v = xp[c * sxc]
                            for m in range(M):
                                pp[c * M + m] += v * dp[(c * M + m) * sdf]
        return
    for c in range(g.C):
        for m in range(M):
            f = c * M + m
            for kh in range(g.KH):
                ih = ih0 + kh * g.dilation_h
                if ih < 0 or ih >= g.H:
                    continue
                for kw in range(KW):
                    _valid_columns(g, kw, ow_a, ow_b, &lo, &hi)
                    xp = x + ih * sxh + c * sxc + (lo * g.stride_w - g.pad_left
                                                   + kw * g.dilation_w) * sxw
                    dp = dy + f * sdf + lo * sdw
                    s = 0
                    for j in range(hi - lo):
                        s = s + xp[j * step] * dp[j * sdw]
                    part[(kh * KW + kw) * F + f] += s


def forward(const floating[:, :, :, :] x,
            const floating[:, :, ::1] filt,
            floating[:, :, :, :] y,
            floating[:, ::1] workspace,
            DwGeometry g,
            bint channels_inner,
            Py_ssize_t unit_pixels,
            int num_threads):
    """Forward depthwise 2-D convolution, written into y.

    x           IN   (N, H, W, C) logical axes, any strides
    filt        IN   (KH, KW, C*M): the filter (KH, KW, C, M) with its last two axes merged
    y           OUT  (N, OH, OW, C*M) logical axes, any strides, fully overwritten
    workspace   --   (num_threads, >= C*M if channels_inner else OW) accumulators
    channels_inner   loop order: True for x contiguous along channels, False along width
    unit_pixels      output pixels per work unit (flat image, row, column order)
    """
    cdef Py_ssize_t isz = sizeof(floating)
    cdef Py_ssize_t N = y.shape[0], P = g.OH * g.OW
    cdef Py_ssize_t total = N * P
    cdef Py_ssize_t unit, q, q_end, n, p, oh, ow_a, ow_b
    cdef Py_ssize_t sxh = x.strides[1] // isz, sxw = x.strides[2] // isz, sxc = x.strides[3] // isz
    cdef Py_ssize_t syw = y.strides[2] // isz, syf = y.strides[3] // isz
    if total == 0:
        return
    for unit in prange(_ceil_div(total, unit_pixels), nogil=True, num_threads=num_threads,
                       schedule='dynamic'):
        q = unit * unit_pixels
        q_end = min(q + unit_pixels, total)
        while q < q_end:
            n = q // P
            p = q - n * P
            oh = p // g.OW
            ow_a = p - oh * g.OW
            ow_b = min(g.OW, ow_a + q_end - q)
            _forward_segment(&g, channels_inner, &x[n, 0, 0, 0], sxh, sxw, sxc, &filt[0, 0, 0],
                             &y[n, oh, 0, 0], syw, syf, oh, ow_a, ow_b,
                             &workspace[threadid(), 0])
            q = q + (ow_b - ow_a)


def backprop_filter(const floating[:, :, :, :] x,
                    const floating[:, :, :, :] dy,
                    floating[:, ::1] partials,
                    DwGeometry g,
                    bint channels_inner,
                    Py_ssize_t unit_pixels,
                    int num_threads):
    """Filter gradient of a depthwise 2-D convolution, one partial sum per work unit.

    x           IN   (N, H, W, C) logical axes, any strides
    dy          IN   (N, OH, OW, C*M) logical axes, any strides
    partials    OUT  (units, KH*KW*C*M): unit u's sum over output pixels [u*unit_pixels,
                     (u+1)*unit_pixels) of the flat (image, row, column) order; the caller
                     adds them up in unit order
    channels_inner   loop order: True for x contiguous along channels, False along width
    """
    cdef Py_ssize_t isz = sizeof(floating)
    cdef Py_ssize_t N = x.shape[0], P = g.OH * g.OW
    cdef Py_ssize_t total = N * P
    cdef Py_ssize_t unit, q, q_end, n, p, oh, ow_a, ow_b, j
    cdef Py_ssize_t sxh = x.strides[1] // isz, sxw = x.strides[2] // isz, sxc = x.strides[3] // isz
    cdef Py_ssize_t sdh = dy.strides[1] // isz, sdw = dy.strides[2] // isz
    cdef Py_ssize_t sdf = dy.strides[3] // isz
    for unit in prange(partials.shape[0], nogil=True, num_threads=num_threads,
                       schedule='dynamic'):
        for j in range(partials.shape[1]):
            partials[unit, j] = 0
        q = unit * unit_pixels
        q_end = min(q + unit_pixels, total)
        while q < q_end:
            n = q // P
            p = q - n * P
            oh = p // g.OW
            ow_a = p - oh * g.OW
            ow_b = min(g.OW, ow_a + q_end - q)
            _filter_segment(&g, channels_inner, &x[n, 0, 0, 0], sxh, sxw, sxc,
                            &dy[n, oh, 0, 0], sdw, sdf, oh, ow_a, ow_b, &partials[unit, 0])
            q = q + (ow_b - ow_a)
