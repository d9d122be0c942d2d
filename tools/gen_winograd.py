"""Generate convbp/_winograd_transforms.h: Winograd F(m x m, 3 x 3) transforms in C.

The transform matrices are built from interpolation points with exact rational arithmetic
(``fractions``): for a 1-D correlation ``y[k] = sum_j d[k + j] g[j]`` of m outputs and r taps,

    y = A^T [(G g) * (B^T d)],       alpha = m + r - 1 points (the last one at infinity),

A^T is the Vandermonde matrix of the points (m x alpha), G evaluates the filter polynomial at
them (alpha x r), and B^T (alpha x alpha) is solved for exactly so that the identity holds; each
row of B^T is then scaled to coprime integers and the scale moved into G.  The 2-D transforms are
the 1-D ones applied along rows and columns: ``Y = A^T [(G g G^T) * (B^T d B)] A``.

Each 1-D transform is emitted as straight-line code, factored where a pair of rows shares work
(rows u, v computed as e + o and e - o, or e + s*o), and the 2-D transform applies it to every
column and then every row of the tile.  The C loops run along channels (the contiguous axis), so
GCC vectorises them; every function is compiled for AVX-512, AVX2 and the baseline.

Run ``python tools/gen_winograd.py`` to rewrite the header; ``--check`` exits 1 if the committed
file differs.  tests/test_winograd.py checks both the matrices and the header.
"""

import argparse
import os
import sys
from fractions import Fraction as Fr

# Interpolation points (finite ones; infinity is always added last).  For F(4, 3) the point 1/2
# replaces +2: the transforms have smaller entries and the float32 error is ~3x lower at the same
# speed (notes/winograd_prototype.md).
POINTS = {
    2: (Fr(0), Fr(1), Fr(-1)),
    4: (Fr(0), Fr(1), Fr(-1), Fr(1, 2), Fr(-2)),
}
R = 3
HEADER = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "convbp",
                      "_winograd_transforms.h")


# ---------------------------------------------------------------------------------------------
# Exact matrices.

def _solve(a, b):
    """The exact solution x of the consistent (possibly overdetermined) system a x = b."""
    rows = [list(r) + [v] for r, v in zip(a, b)]
    n = len(a[0])
    pivots, r0 = [], 0
    for col in range(n):
        piv = next((i for i in range(r0, len(rows)) if rows[i][col] != 0), None)
        if piv is None:
            continue
        rows[r0], rows[piv] = rows[piv], rows[r0]
        p = rows[r0][col]
        rows[r0] = [v / p for v in rows[r0]]
        for i in range(len(rows)):
            if i != r0 and rows[i][col] != 0:
                f = rows[i][col]
                rows[i] = [v - f * w for v, w in zip(rows[i], rows[r0])]
        pivots.append(col)
        r0 += 1
    if any(all(v == 0 for v in row[:-1]) and row[-1] != 0 for row in rows):
        raise ValueError("inconsistent system")
    if len(pivots) != n:
        raise ValueError("singular system")
    x = [Fr(0)] * n
    for i, col in enumerate(pivots):
        x[col] = rows[i][-1]
    return x


def _lcm(a, b):
    from math import gcd
    return a * b // gcd(a, b)


def matrices(m, r=R, points=None):
    """(A^T, G, B^T) of F(m, r) as lists of rows of Fractions."""
    points = POINTS[m] if points is None else points
    alpha = m + r - 1
    assert len(points) == alpha - 1
    at = [[p ** k for p in points] + [Fr(int(k == m - 1))] for k in range(m)]
    g = [[p ** j for j in range(r)] for p in points] + [[Fr(int(j == r - 1)) for j in range(r)]]
    # B^T column by column: sum_i A^T[k][i] G[i][j] B^T[i][l] = [l == k + j] for all k, j.
    coeff = [[at[k][i] * g[i][j] for i in range(alpha)] for k in range(m) for j in range(r)]
    cols = [_solve(coeff, [Fr(int(l == k + j)) for k in range(m) for j in range(r)])
            for l in range(alpha)]
    bt = [[cols[l][i] for l in range(alpha)] for i in range(alpha)]
    # Rows of B^T as coprime integers, first nonzero entry positive; G takes the inverse scale.
    from math import gcd
    for i in range(alpha):
        den = 1
        for v in bt[i]:
            den = _lcm(den, v.denominator)
        ints = [int(v * den) for v in bt[i]]
        common = 0
        for v in ints:
            common = gcd(common, abs(v))
        sign = 1 if next(v for v in ints if v) > 0 else -1
        scale = Fr(den * sign, common)
        bt[i] = [v * scale for v in bt[i]]
        g[i] = [v / scale for v in g[i]]
    return at, g, bt


def correlate_1d(d, g):
    return [sum(d[k + j] * g[j] for j in range(len(g))) for k in range(len(d) - len(g) + 1)]


# ---------------------------------------------------------------------------------------------
# Straight-line code for y = M x (M exact), factored over pairs of rows.

def _fmt_coef(c):
    if c.denominator == 1:
        return f"{c.numerator}"
    return f"{c.numerator}/{c.denominator}"


def _c_const(c, t):
    """A C constant of type t for the exact value c (a dyadic rational is exact in binary)."""
    if c.denominator == 1:
        return f"({t}){c.numerator}"
    if c.denominator & (c.denominator - 1) == 0:
        return f"({t}){float(c)!r}"
    return f"({t})({c.numerator}.0 / {c.denominator}.0)"


def _nnz(row):
    return sum(1 for v in row if v != 0)


def _expr(row, names, t):
    """C expression for sum_i row[i] * names[i], ones and minus ones without a multiply."""
    terms = []
    for c, name in zip(row, names):
        if c == 0:
            continue
        if abs(c) == 1:
            term = name
        else:
            term = f"{_c_const(abs(c), t)} * {name}"
        terms.append(("-" if c < 0 else "+", term))
    if not terms:
        return f"({t})0"
    sign, first = terms[0]
    out = first if sign == "+" else f"-{first}"
    for sign, term in terms[1:]:
        out += f" {sign} {term}"
    return out


def _cost(row):
    """Adds and multiplies of one output of a row: nnz - 1 adds, a multiply per |c| != 1."""
    return max(_nnz(row) - 1, 0) + sum(1 for c in row if c != 0 and abs(c) != 1)


def program(mat):
    """Statements computing y = mat x, factored over pairs of rows.

    Rows u, v with u = se*e + so*o and v = se*e - so*o (e, o sharing no input) become two
    temporaries e, o (first coefficient 1) and two adds, where that costs fewer operations.
    Returns (temps, outputs): temps are rows over the inputs; an output is a row over the inputs
    or a tuple (temp e, se, temp o, +-so).
    """
    temps, outputs, done = [], [None] * len(mat), set()
    for u in range(len(mat)):
        if u in done:
            continue
        best = None
        for v in range(u + 1, len(mat)):
            if v in done:
                continue
            ru, rv = mat[u], mat[v]
            e = [(a + b) / 2 for a, b in zip(ru, rv)]
            o = [(a - b) / 2 for a, b in zip(ru, rv)]
            if not _nnz(e) or not _nnz(o):
                continue
            se = next(c for c in e if c != 0)
            so = next(c for c in o if c != 0)
            e1, o1 = [c / se for c in e], [c / so for c in o]
            cost = _cost(e1) + _cost(o1) + 2 + 2 * (abs(se) != 1) + 2 * (abs(so) != 1)
            if cost < _cost(ru) + _cost(rv) and (best is None or cost < best[0]):
                best = cost, v, e1, se, o1, so
        if best is None:
            outputs[u] = mat[u]
            done.add(u)
            continue
        _, v, e1, se, o1, so = best
        te, to = len(temps), len(temps) + 1
        temps += [e1, o1]
        outputs[u], outputs[v] = (te, se, to, so), (te, se, to, -so)
        done |= {u, v}
    return temps, outputs


def emit_1d(mat, inputs, outputs, tmp_prefix, t, indent):
    """C lines computing outputs[i] = sum_j mat[i][j] inputs[j], factored."""
    temps, outs = program(mat)
    lines = []
    tnames = [f"{tmp_prefix}{k}" for k in range(len(temps))]
    for name, row in zip(tnames, temps):
        lines.append(f"{indent}const {t} {name} = {_expr(row, inputs, t)};")
    for name, out in zip(outputs, outs):
        if isinstance(out, tuple):
            te, se, to, so = out
            if abs(se) == abs(so) and abs(se) != 1:  # one multiply: se * (e +- o)
                op = "+" if so == se else "-"
                lines.append(f"{indent}const {t} {name} = {_c_const(se, t)} * "
                             f"({tnames[te]} {op} {tnames[to]});")
            else:
                lines.append(f"{indent}const {t} {name} = "
                             f"{_expr([se, so], [tnames[te], tnames[to]], t)};")
        else:
            lines.append(f"{indent}const {t} {name} = {_expr(out, inputs, t)};")
    return lines


def transpose(mat):
    return [list(col) for col in zip(*mat)]


def emit_2d(left, right_t, src, dst, t, indent, stage_names):
    """dst = left @ src @ right_t^T (src a grid of names): columns first, then rows.

    left: (p x q) applied to each column of the q x q' grid src; right_t: (p' x q') applied to
    each row of the result.  Returns the lines; dst names are dst[i][j].
    """
    p, q = len(left), len(left[0])
    qq = len(src[0])
    lines = [f"{indent}/* {stage_names[0]} */"]
    mid = [[f"{stage_names[2]}{i}{j}" for j in range(qq)] for i in range(p)]
    for j in range(qq):
        lines += emit_1d(left, [src[i][j] for i in range(q)], [mid[i][j] for i in range(p)],
                         f"{stage_names[2]}c{j}_", t, indent)
    lines.append(f"{indent}/* {stage_names[1]} */")
    pp = len(right_t)
    for i in range(p):
        lines += emit_1d(right_t, mid[i], [dst[i][j] for j in range(pp)],
                         f"{stage_names[3]}r{i}_", t, indent)
    return lines


def _matrix_comment(name, mat):
    width = max(len(_fmt_coef(v)) for row in mat for v in row)
    rows = ["  [" + " ".join(_fmt_coef(v).rjust(width) for v in row) + "]" for row in mat]
    return [f" *   {name} ="] + [" *   " + r for r in rows]


# Vector types (GCC vector extensions, defined in _simd.h): 64 bytes, lowered by each clone to
# its widest registers.  The filter transform works in double: 8 lanes either way.
VEC = {"float": ("convbp_f32x16", 16), "double": ("convbp_f64x8", 8)}
VEC8 = {"float": "convbp_f32x8", "double": "convbp_f64x8"}


def _loop(lines, body, t, indent="    "):
    """A loop over channels c: whole vectors of lanes, then one channel at a time.

    body(kind) returns the statements for one step, kind "vector" or "scalar"."""
    lines.append(f"{indent}ptrdiff_t c = 0;")
    lines.append(f"{indent}for (; c + {VEC[t][1] if body.__name__ != 'filter_body' else 8} <= n; "
                 f"c += {VEC[t][1] if body.__name__ != 'filter_body' else 8}) {{")
    lines += body("vector")
    lines.append(f"{indent}}}")
    lines.append(f"{indent}for (; c < n; ++c) {{")
    lines += body("scalar")
    lines.append(f"{indent}}}")


def emit_tile(m):
    at, g, bt = matrices(m)
    alpha = m + R - 1
    lines = []
    pts = ", ".join(_fmt_coef(p) for p in POINTS[m]) + ", inf"
    lines.append(f"/* ---- F({m}x{m}, 3x3): alpha = {alpha}, points {{{pts}}} ----")
    lines += _matrix_comment("A^T", at) + _matrix_comment("G", g) + _matrix_comment("B^T", bt)
    lines.append(" */")
    a = alpha
    ind = "        "
    for t, sfx in (("float", "f32"), ("double", "f64")):
        vt = VEC[t][0]

        def loads(names, offsets, kind, vtype=None, base="src"):
            out = []
            for row_names, row_offsets in zip(names, offsets):
                if kind == "vector":
                    out.append(ind + " ".join(
                        f"const {vtype or vt} {nm} = *(const {vtype or vt} *)({base} + {off});"
                        for nm, off in zip(row_names, row_offsets)))
                else:
                    out.append(ind + " ".join(f"const {t} {nm} = {base}[{off}];"
                                              for nm, off in zip(row_names, row_offsets)))
            return out

        def stores(names, offsets, kind, vtype=None, base="dst"):
            out = []
            for row_names, row_offsets in zip(names, offsets):
                if kind == "vector":
                    out.append(ind + " ".join(f"*({vtype or vt} *)({base} + {off}) = {nm};"
                                              for nm, off in zip(row_names, row_offsets)))
                else:
                    out.append(ind + " ".join(f"{base}[{off}] = {nm};"
                                              for nm, off in zip(row_names, row_offsets)))
            return out

        def typed(lines_, kind, vtype=None):
            if kind == "vector":
                return [ln.replace(f"const {t} ", f"const {vtype or vt} ") for ln in lines_]
            return lines_

        # Input transform.
        d = [[f"d{i}{j}" for j in range(a)] for i in range(a)]
        v = [[f"v{i}{j}" for j in range(a)] for i in range(a)]
        in_off = [[f"{i}*s_row + {j}*s_col + c" for j in range(a)] for i in range(a)]
        out_off = [[f"{i * a + j}*d_xi + c" for j in range(a)] for i in range(a)]
        in_math = emit_2d(bt, bt, d, v, t, ind, ("columns: u = B^T d", "rows: v = u B", "u", "w"))

        def input_body(kind):
            return loads(d, in_off, kind) + typed(in_math, kind) + stores(v, out_off, kind)

        lines.append("")
        lines.append(f"/* v = B^T d B for n channels: d[i][j] at src[i*s_row + j*s_col + c], "
                     f"v[k] (k = i*{a} + j) at\n * dst[k*d_xi + c]. */")
        lines.append(f"CONVBP_CLONES CONVBP_UNUSED static void "
                     f"convbp_wino{m}_input_{sfx}(")
        lines.append(f"    const {t} *restrict src, ptrdiff_t s_row, ptrdiff_t s_col, "
                     f"{t} *restrict dst, ptrdiff_t d_xi, ptrdiff_t n)")
        lines.append("{")
        _loop(lines, input_body, t)
        lines.append("}")

        # Output transform.
        x = [[f"x{i}{j}" for j in range(a)] for i in range(a)]
        y = [[f"y{i}{j}" for j in range(m)] for i in range(m)]
        x_off = [[f"{i * a + j}*s_xi + c" for j in range(a)] for i in range(a)]
        y_off = [[f"{i}*d_row + {j}*d_col + c" for j in range(m)] for i in range(m)]
        out_math = emit_2d(at, at, x, y, t, ind, ("columns: z = A^T x", "rows: y = z A", "z", "q"))

        def output_body(kind):
            return loads(x, x_off, kind) + typed(out_math, kind) + stores(y, y_off, kind)

        lines.append("")
        lines.append(f"/* y = A^T x A for n channels: x[k] at src[k*s_xi + c], y[i][j] at "
                     f"dst[i*d_row + j*d_col + c]. */")
        lines.append(f"CONVBP_CLONES CONVBP_UNUSED static void "
                     f"convbp_wino{m}_output_{sfx}(")
        lines.append(f"    const {t} *restrict src, ptrdiff_t s_xi, {t} *restrict dst, "
                     f"ptrdiff_t d_row, ptrdiff_t d_col, ptrdiff_t n)")
        lines.append("{")
        _loop(lines, output_body, t)
        lines.append("}")

        # Filter transform, in double whatever the storage type (rounded once).  The vector
        # loop runs over 8 filters with unit stride (s_c == 1), else one at a time.
        w = [[f"g{i}{j}" for j in range(R)] for i in range(R)]
        u = [[f"h{i}{j}" for j in range(a)] for i in range(a)]
        w_off = [[f"{i}*s_row + {j}*s_col + c*s_c" for j in range(R)] for i in range(R)]
        u_off = [[f"{i * a + j}*d_xi + c" for j in range(a)] for i in range(a)]
        f_math = emit_2d(g, g, w, u, "double", ind,
                         ("columns: e = G w", "rows: h = e G^T", "e", "f"))
        v8, d8 = VEC8[t], "convbp_f64x8"

        def filter_body(kind):
            if kind == "vector":
                out = []
                for i in range(R):
                    out.append(ind + " ".join(
                        f"const {d8} {w[i][j]} = __builtin_convertvector(*(const {v8} *)(src + "
                        f"{i}*s_row + {j}*s_col + c), {d8});" for j in range(R)))
                out += [ln.replace("const double ", f"const {d8} ") for ln in f_math]
                for i in range(a):
                    out.append(ind + " ".join(
                        f"*({v8} *)(dst + {u_off[i][j]}) = __builtin_convertvector({u[i][j]}, "
                        f"{v8});" for j in range(a)))
                return out
            out = []
            for i in range(R):
                out.append(ind + " ".join(f"const double {w[i][j]} = src[{w_off[i][j]}];"
                                          for j in range(R)))
            out += f_math
            for i in range(a):
                out.append(ind + " ".join(f"dst[{u_off[i][j]}] = ({t}){u[i][j]};"
                                          for j in range(a)))
            return out

        lines.append("")
        lines.append(f"/* u = G w G^T for n filters, computed in double and rounded once: w[i][j] "
                     f"at\n * src[i*s_row + j*s_col + c*s_c], u[k] at dst[k*d_xi + c]. */")
        lines.append(f"CONVBP_CLONES CONVBP_UNUSED static void "
                     f"convbp_wino{m}_filter_{sfx}(")
        lines.append(f"    const {t} *restrict src, ptrdiff_t s_row, ptrdiff_t s_col, "
                     f"ptrdiff_t s_c, {t} *restrict dst, ptrdiff_t d_xi, ptrdiff_t n)")
        lines.append("{")
        lines.append("    ptrdiff_t c = 0;")
        lines.append("    if (s_c == 1) {")
        lines.append("        for (; c + 8 <= n; c += 8) {")
        lines += ["    " + ln for ln in filter_body("vector")]
        lines.append("        }")
        lines.append("    }")
        lines.append("    for (; c < n; ++c) {")
        lines += filter_body("scalar")
        lines.append("    }")
        lines.append("}")

        # Filter gradient.  The forward tile is Y = A^T [(G w G^T) * (B^T d B)] A, so
        # dW = G^T [(A dY A^T) * (B^T d B)] G: the output gradient's tile goes through A (the
        # "grad-output transform" z = A dY A^T, m x m -> alpha x alpha), the products are summed
        # over tiles in the transformed domain, and G^T . G (alpha x alpha -> 3 x 3) runs once
        # per filter at the end, in double and rounded once.
        amat = transpose(at)
        dyn = [[f"d{i}{j}" for j in range(m)] for i in range(m)]
        z = [[f"z{i}{j}" for j in range(a)] for i in range(a)]
        dy_off = [[f"{i}*s_row + {j}*s_col + c" for j in range(m)] for i in range(m)]
        z_off = [[f"{i * a + j}*d_xi + c" for j in range(a)] for i in range(a)]
        gradout_math = emit_2d(amat, amat, dyn, z, t, ind,
                               ("columns: u = A d", "rows: z = u A^T", "u", "w"))

        def gradout_body(kind):
            return loads(dyn, dy_off, kind) + typed(gradout_math, kind) + stores(z, z_off, kind)

        lines.append("")
        lines.append(f"/* z = A d A^T for n channels: d[i][j] at src[i*s_row + j*s_col + c], "
                     f"z[k] (k = i*{a} + j) at\n * dst[k*d_xi + c]. */")
        lines.append(f"CONVBP_CLONES CONVBP_UNUSED static void "
                     f"convbp_wino{m}_gradout_{sfx}(")
        lines.append(f"    const {t} *restrict src, ptrdiff_t s_row, ptrdiff_t s_col, "
                     f"{t} *restrict dst, ptrdiff_t d_xi, ptrdiff_t n)")
        lines.append("{")
        _loop(lines, gradout_body, t)
        lines.append("}")

        gt = transpose(g)
        x = [[f"x{i}{j}" for j in range(a)] for i in range(a)]
        dw = [[f"w{i}{j}" for j in range(R)] for i in range(R)]
        dw_off = [[f"{i}*d_row + {j}*d_col" for j in range(R)] for i in range(R)]
        gradfilter_math = emit_2d(gt, gt, x, dw, "double", ind,
                                  ("columns: e = G^T x", "rows: w = e G", "e", "f"))

        def gradfilter_body(kind):
            if kind == "vector":
                out = []
                for i in range(a):
                    out.append(ind + " ".join(
                        f"const {d8} {x[i][j]} = __builtin_convertvector(*(const {v8} *)(src + "
                        f"{x_off[i][j]}), {d8});" for j in range(a)))
                out += [ln.replace("const double ", f"const {d8} ") for ln in gradfilter_math]
                out.append(ind + "if (d_c == 1) {")
                for i in range(R):
                    out.append(ind + "    " + " ".join(
                        f"*({v8} *)(dst + {dw_off[i][j]} + c) = __builtin_convertvector("
                        f"{dw[i][j]}, {v8});" for j in range(R)))
                out.append(ind + "} else {")
                out.append(ind + "    for (int l = 0; l < 8; ++l) {")
                for i in range(R):
                    out.append(ind + "        " + " ".join(
                        f"dst[{dw_off[i][j]} + (c + l)*d_c] = ({t}){dw[i][j]}[l];"
                        for j in range(R)))
                out.append(ind + "    }")
                out.append(ind + "}")
                return out
            out = []
            for i in range(a):
                out.append(ind + " ".join(f"const double {x[i][j]} = src[{x_off[i][j]}];"
                                          for j in range(a)))
            out += gradfilter_math
            for i in range(R):
                out.append(ind + " ".join(f"dst[{dw_off[i][j]} + c*d_c] = ({t}){dw[i][j]};"
                                          for j in range(R)))
            return out

        lines.append("")
        lines.append(f"/* w = G^T x G for n filters, computed in double and rounded once: x[k] "
                     f"at src[k*s_xi + c],\n * w[i][j] at dst[i*d_row + j*d_col + c*d_c]. */")
        lines.append(f"CONVBP_CLONES CONVBP_UNUSED static void "
                     f"convbp_wino{m}_gradfilter_{sfx}(")
        lines.append(f"    const {t} *restrict src, ptrdiff_t s_xi, {t} *restrict dst, "
                     f"ptrdiff_t d_row, ptrdiff_t d_col, ptrdiff_t d_c, ptrdiff_t n)")
        lines.append("{")
        lines.append("    ptrdiff_t c = 0;")
        lines.append("    for (; c + 8 <= n; c += 8) {")
        lines += ["    " + ln for ln in gradfilter_body("vector")]
        lines.append("    }")
        lines.append("    for (; c < n; ++c) {")
        lines += gradfilter_body("scalar")
        lines.append("    }")
        lines.append("}")
    return lines


def generate():
    lines = [
        "/* Generated by tools/gen_winograd.py -- do not edit; run the script instead.",
        " *",
        " * Winograd transforms F(m x m, 3 x 3) for convbp/_winograd.pyx: input (B^T d B), output",
        " * (A^T x A) and filter (G w G^T) transforms of one tile, and for the filter gradient the",
        " * grad-output (A d A^T) and filter-gradient (G^T x G) transforms, vectorised along channels",
        " * (the loop over c, contiguous in memory).  ISO C (c_std=c11): no FMA contraction. */",
        "#ifndef CONVBP_WINOGRAD_TRANSFORMS_H",
        "#define CONVBP_WINOGRAD_TRANSFORMS_H",
        "",
        '#include "_simd.h" /* CONVBP_CLONES */',
        "#include <stddef.h>",
        "",
    ]
    # The transforms need GNU C vector extensions (GCC, Clang); without them (MSVC, or
    # -DCONVBP_PLAIN_C) the kernel is left out and "auto" never picks it.
    lines += ["#if CONVBP_VECTORS", "#define CONVBP_WINOGRAD_AVAILABLE 1", ""]
    stubs = []
    for m in sorted(POINTS):
        lines += emit_tile(m)
        lines.append("")
        for stage, args in (("input", "const T *s, ptrdiff_t a, ptrdiff_t b, T *d, ptrdiff_t e, "
                                      "ptrdiff_t n"),
                            ("output", "const T *s, ptrdiff_t a, T *d, ptrdiff_t b, ptrdiff_t e, "
                                       "ptrdiff_t n"),
                            ("filter", "const T *s, ptrdiff_t a, ptrdiff_t b, ptrdiff_t c, T *d, "
                                       "ptrdiff_t e, ptrdiff_t n"),
                            ("gradout", "const T *s, ptrdiff_t a, ptrdiff_t b, T *d, ptrdiff_t e, "
                                        "ptrdiff_t n"),
                            ("gradfilter", "const T *s, ptrdiff_t a, T *d, ptrdiff_t b, "
                                           "ptrdiff_t c, ptrdiff_t e, ptrdiff_t n")):
            for suffix, t in (("f32", "float"), ("f64", "double")):
                stubs.append(f"static void convbp_wino{m}_{stage}_{suffix}("
                             f"{args.replace('T ', t + ' ')}) {{ abort(); }}")
    lines += ["#else /* never called: the engine checks CONVBP_WINOGRAD_AVAILABLE */",
              "#include <stdlib.h>", "#define CONVBP_WINOGRAD_AVAILABLE 0"] + stubs
    lines += ["#endif", "", "#endif"]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="exit 1 if the header is out of date")
    p.add_argument("--output", default=HEADER)
    args = p.parse_args(argv)
    text = generate()
    if args.check:
        with open(args.output) as f:
            same = f.read() == text
        print("up to date" if same else f"{args.output} differs from the generator's output")
        return 0 if same else 1
    with open(args.output, "w") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
