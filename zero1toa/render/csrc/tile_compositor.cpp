// CPU tile compositor for 3D Gaussian splatting: forward and analytic backward.
//
// Why this file exists: the pure-torch compositor (zero1toa/render/cpu_rasterizer.py) has to
// materialise [tiles, pixels, gaussians] tensors, which makes CPU training slow and memory
// hungry. Here each (image, 16x16 tile) is one task; within a tile we walk the depth-sorted
// Gaussian list and, for the rows its screen box covers, update whole 16-pixel tile rows with
// explicit SIMD vectors (GCC vector extensions: 16 lanes with AVX-512, 8 with AVX, 4 with
// SSE2; compiled with -march=native for the machine at hand). Whole rows with a fixed trip
// count vectorise cleanly; the lanes outside the box fail the alpha test by construction.
//
// Semantics follow gsplat 1.5.3's CUDA kernels (RasterizeToPixels3DGS{Fwd,Bwd}.cu):
//   pixel centre (j + 0.5, i + 0.5); delta = mean2d - pixel;
//   sigma = 0.5 (a dx^2 + c dy^2) + b dx dy with conic (a, b, c);
//   alpha = min(0.999, opacity * exp(-sigma)); skip when sigma < 0 or alpha < 1/255;
//   a pixel stops (exclusively) at the Gaussian that would bring T to <= 1e-4;
//   gradients through the 0.999 clamp are zero, exactly as gsplat.
// Gradients are first written per (gaussian, tile) pair and then summed per Gaussian in a
// fixed order, so results do not depend on thread scheduling.
//
// Only ATen core headers are used (no pybind11, no torch/extension.h): the JIT compile takes
// seconds instead of half a minute. Ops are registered under torch.ops.zero1toa_cpu.

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

// Pixel range [lo, hi] (inclusive) whose centres lie within [m - r, m + r], clipped to [0, n).
inline void pixel_span(double m, int32_t r, int32_t n, int32_t &lo, int32_t &hi) {
    lo = static_cast<int32_t>(std::ceil(m - r - 0.5));
    hi = static_cast<int32_t>(std::floor(m + r - 0.5));
    if (lo < 0) lo = 0;
    if (hi > n - 1) hi = n - 1;
}

// Tile range [lo, hi) a Gaussian's box touches (gsplat's isect_tiles rule), clipped to [0, n].
inline void tile_span(float m, int32_t r, int32_t tile, int32_t n, int32_t &lo, int32_t &hi) {
    const float t = m / static_cast<float>(tile);
    const float tr = static_cast<float>(r) / static_cast<float>(tile);
    lo = static_cast<int32_t>(std::floor(t - tr));
    hi = static_cast<int32_t>(std::ceil(t + tr));
    lo = std::min(std::max(lo, 0), n);
    hi = std::min(std::max(hi, 0), n);
}

void check_cpu_contig(const at::Tensor &t, const char *name) {
    TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
    TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

// ---------------------------------------------------------------------------------------
// Binning: (image, tile) -> depth-ordered Gaussian ids.
// means2d [I, N, 2], radii [I, N, 2] int32 (0 = culled), depths [I, N] (> 0 where visible).
// Visible Gaussians are radix-sorted by depth (LSD radix on the IEEE bits, which order like
// the values for positive numbers; stable, so ties keep id order, as gsplat's sort does),
// then dealt into tiles by a counting sort.
// Returns offsets [I * TH * TW + 1] int64 and ids [M] int32 (Gaussian index within image).
// ---------------------------------------------------------------------------------------
template <typename scalar_t>
void depth_order(const scalar_t *depth, const int32_t *radii, int64_t N, std::vector<int32_t> &order) {
    using Key = typename std::conditional<sizeof(scalar_t) == 4, uint32_t, uint64_t>::type;
    std::vector<int32_t> idx;
    std::vector<Key> keys;
    idx.reserve(N);
    keys.reserve(N);
    for (int64_t g = 0; g < N; ++g) {
        if (radii[2 * g] <= 0 || radii[2 * g + 1] <= 0) continue;
        Key k;
        std::memcpy(&k, depth + g, sizeof(Key));
        idx.push_back(static_cast<int32_t>(g));
        keys.push_back(k);
    }
    const size_t n = idx.size();
    std::vector<int32_t> idx2(n);
    std::vector<Key> keys2(n);
    for (size_t shift = 0; shift < 8 * sizeof(Key); shift += 8) {
        size_t count[257] = {0};
        for (size_t i = 0; i < n; ++i) count[((keys[i] >> shift) & 0xff) + 1] += 1;
        if (count[((keys.empty() ? 0 : keys[0]) >> shift & 0xff) + 1] == n) continue;  // digit constant
        for (int b = 0; b < 256; ++b) count[b + 1] += count[b];
        for (size_t i = 0; i < n; ++i) {
            const size_t dst = count[(keys[i] >> shift) & 0xff]++;
            keys2[dst] = keys[i];
            idx2[dst] = idx[i];
        }
        keys.swap(keys2);
        idx.swap(idx2);
    }
    order.swap(idx);
}

template <typename scalar_t>
std::tuple<at::Tensor, at::Tensor> bin_impl(const at::Tensor &means2d, const at::Tensor &radii,
                                            const at::Tensor &depths, int64_t width, int64_t height,
                                            int64_t tile) {
    const int64_t I = means2d.size(0), N = means2d.size(1);
    const int32_t TW = static_cast<int32_t>((width + tile - 1) / tile);
    const int32_t TH = static_cast<int32_t>((height + tile - 1) / tile);
    const int64_t T = static_cast<int64_t>(TW) * TH;
    const scalar_t *m = means2d.data_ptr<scalar_t>();
    const int32_t *r = radii.data_ptr<int32_t>();
    const scalar_t *dep = depths.data_ptr<scalar_t>();

    std::vector<int64_t> counts(I * T + 1, 0);
    std::vector<std::vector<int32_t>> orders(I);
    for (int64_t img = 0; img < I; ++img) {
        depth_order(dep + img * N, r + img * N * 2, N, orders[img]);
        for (const int32_t g : orders[img]) {
            const int64_t q = img * N + g;
            int32_t x0, x1, y0, y1;
            tile_span(static_cast<float>(m[2 * q]), r[2 * q], static_cast<int32_t>(tile), TW, x0, x1);
            tile_span(static_cast<float>(m[2 * q + 1]), r[2 * q + 1], static_cast<int32_t>(tile), TH, y0, y1);
            for (int32_t ty = y0; ty < y1; ++ty)
                for (int32_t tx = x0; tx < x1; ++tx) counts[img * T + ty * TW + tx + 1] += 1;
        }
    }
    for (int64_t k = 1; k <= I * T; ++k) counts[k] += counts[k - 1];
    const int64_t M = counts[I * T];
    TORCH_CHECK(M < (int64_t(1) << 31), "too many Gaussian-tile pairs for the CPU rasterizer");

    at::Tensor offsets = at::empty({I * T + 1}, at::TensorOptions().dtype(at::kLong));
    at::Tensor ids = at::empty({M}, at::TensorOptions().dtype(at::kInt));
    int64_t *off = offsets.data_ptr<int64_t>();
    int32_t *out = ids.data_ptr<int32_t>();
    std::copy(counts.begin(), counts.end(), off);
    std::vector<int64_t> cursor(counts.begin(), counts.end() - 1);
    for (int64_t img = 0; img < I; ++img) {
        for (const int32_t g : orders[img]) {
            const int64_t q = img * N + g;
            int32_t x0, x1, y0, y1;
            tile_span(static_cast<float>(m[2 * q]), r[2 * q], static_cast<int32_t>(tile), TW, x0, x1);
            tile_span(static_cast<float>(m[2 * q + 1]), r[2 * q + 1], static_cast<int32_t>(tile), TH, y0, y1);
            for (int32_t ty = y0; ty < y1; ++ty)
                for (int32_t tx = x0; tx < x1; ++tx) out[cursor[img * T + ty * TW + tx]++] = g;
        }
    }
    return {offsets, ids};
}

std::tuple<at::Tensor, at::Tensor> bin_gaussians(const at::Tensor &means2d, const at::Tensor &radii,
                                                 const at::Tensor &depths, int64_t width, int64_t height,
                                                 int64_t tile) {
    check_cpu_contig(means2d, "means2d");
    check_cpu_contig(radii, "radii");
    check_cpu_contig(depths, "depths");
    TORCH_CHECK(radii.scalar_type() == at::kInt, "radii must be int32");
    TORCH_CHECK(means2d.dim() == 3 && means2d.size(2) == 2, "means2d must be [I, N, 2]");
    TORCH_CHECK(depths.scalar_type() == means2d.scalar_type(), "depths must share means2d's dtype");
    TORCH_CHECK(depths.dim() == 2 && depths.size(0) == means2d.size(0) && depths.size(1) == means2d.size(1),
                "depths must be [I, N]");
    TORCH_CHECK(radii.numel() == means2d.numel(), "radii must be [I, N, 2]");
    if (means2d.scalar_type() == at::kDouble) return bin_impl<double>(means2d, radii, depths, width, height, tile);
    TORCH_CHECK(means2d.scalar_type() == at::kFloat, "means2d must be float32 or float64");
    return bin_impl<float>(means2d, radii, depths, width, height, tile);
}

// Shared view of the inputs of one composite call.
template <typename scalar_t>
struct Scene {
    int64_t I, N, D, W, H, tile, TW, TH;
    const scalar_t *means2d;  // [I, N, 2]
    const scalar_t *conics;   // [I, N, 3]
    const scalar_t *opac;     // [I, N]
    const scalar_t *colors;   // [I, N, D]
    const scalar_t *bg;       // [I, D] or nullptr
    const int32_t *radii;     // [I, N, 2]
    const int64_t *offsets;   // [I * TH * TW + 1]
    const int32_t *ids;       // [M]
};

template <typename scalar_t>
Scene<scalar_t> make_scene(const at::Tensor &means2d, const at::Tensor &conics,
                           const at::Tensor &opac, const at::Tensor &colors,
                           const c10::optional<at::Tensor> &bg, const at::Tensor &radii,
                           const at::Tensor &offsets, const at::Tensor &ids, int64_t width,
                           int64_t height, int64_t tile) {
    Scene<scalar_t> s;
    s.I = means2d.size(0);
    s.N = means2d.size(1);
    s.D = colors.size(2);
    s.W = width;
    s.H = height;
    s.tile = tile;
    s.TW = (width + tile - 1) / tile;
    s.TH = (height + tile - 1) / tile;
    s.means2d = means2d.data_ptr<scalar_t>();
    s.conics = conics.data_ptr<scalar_t>();
    s.opac = opac.data_ptr<scalar_t>();
    s.colors = colors.data_ptr<scalar_t>();
    s.bg = (bg.has_value() && bg->defined()) ? bg->data_ptr<scalar_t>() : nullptr;
    s.radii = radii.data_ptr<int32_t>();
    s.offsets = offsets.data_ptr<int64_t>();
    s.ids = ids.data_ptr<int32_t>();
    return s;
}

void check_inputs(const at::Tensor &means2d, const at::Tensor &conics, const at::Tensor &opac,
                  const at::Tensor &colors, const c10::optional<at::Tensor> &bg,
                  const at::Tensor &radii, const at::Tensor &offsets, const at::Tensor &ids,
                  int64_t width, int64_t height, int64_t tile) {
    check_cpu_contig(means2d, "means2d");
    check_cpu_contig(conics, "conics");
    check_cpu_contig(opac, "opacities");
    check_cpu_contig(colors, "colors");
    check_cpu_contig(radii, "radii");
    check_cpu_contig(offsets, "offsets");
    check_cpu_contig(ids, "ids");
    const auto st = means2d.scalar_type();
    TORCH_CHECK(st == at::kFloat || st == at::kDouble, "means2d must be float32 or float64");
    TORCH_CHECK(conics.scalar_type() == st && opac.scalar_type() == st && colors.scalar_type() == st,
                "means2d, conics, opacities and colors must share one dtype");
    const int64_t I = means2d.size(0), N = means2d.size(1);
    TORCH_CHECK(means2d.dim() == 3 && means2d.size(2) == 2, "means2d must be [I, N, 2]");
    TORCH_CHECK(conics.dim() == 3 && conics.size(0) == I && conics.size(1) == N && conics.size(2) == 3,
                "conics must be [I, N, 3]");
    TORCH_CHECK(opac.dim() == 2 && opac.size(0) == I && opac.size(1) == N, "opacities must be [I, N]");
    TORCH_CHECK(colors.dim() == 3 && colors.size(0) == I && colors.size(1) == N, "colors must be [I, N, D]");
    TORCH_CHECK(radii.scalar_type() == at::kInt, "radii must be int32");
    TORCH_CHECK(offsets.scalar_type() == at::kLong, "offsets must be int64");
    TORCH_CHECK(ids.scalar_type() == at::kInt, "ids must be int32");
    const int64_t TW = (width + tile - 1) / tile, TH = (height + tile - 1) / tile;
    TORCH_CHECK(offsets.numel() == I * TW * TH + 1, "offsets do not match the image/tile grid");
    if (bg.has_value() && bg->defined()) {
        check_cpu_contig(*bg, "backgrounds");
        TORCH_CHECK(bg->scalar_type() == st, "backgrounds must share the colors' dtype");
        TORCH_CHECK(bg->dim() == 2 && bg->size(0) == I && bg->size(1) == colors.size(2),
                    "backgrounds must be [I, D]");
    }
}

#define Z1_INLINE inline __attribute__((always_inline))

// Vector width in lanes for this build (one tile row is 16 pixels = 16 / VW vectors).
#if defined(__AVX512F__)
constexpr int VW = 16;
#elif defined(__AVX__)
constexpr int VW = 8;
#else
constexpr int VW = 4;
#endif

// The kernels work on fixed 16 x 16 tiles.
constexpr int32_t TS = 16;
constexpr int32_t TP = TS * TS;

typedef int32_t vi32 __attribute__((vector_size(4 * VW)));
template <typename S>
struct Vec;
template <>
struct Vec<float> {
    typedef float v __attribute__((vector_size(4 * VW)));
    typedef int32_t m __attribute__((vector_size(4 * VW)));  // comparison masks
};
template <>
struct Vec<double> {
    typedef double v __attribute__((vector_size(8 * VW)));
    typedef int64_t m __attribute__((vector_size(8 * VW)));
};

template <typename VT, typename T>
Z1_INLINE VT vload(const T *p) {
    VT v;
    std::memcpy(&v, p, sizeof(VT));
    return v;
}
template <typename VT, typename T>
Z1_INLINE void vstore(T *p, const VT &v) {
    std::memcpy(p, &v, sizeof(VT));
}
template <typename VT, typename S>
Z1_INLINE VT splat(S x) {
    return VT{} + x;
}
template <typename VT>
Z1_INLINE auto hsum(const VT &v) {
    auto s = v[0];
    for (int i = 1; i < VW; ++i) s += v[i];
    return s;
}
// int32 per-pixel flags <-> the comparison mask type of the float/double vectors.
template <typename M>
Z1_INLINE M widen(const vi32 &x) {
    return __builtin_convertvector(x, M);
}
template <typename M>
Z1_INLINE vi32 narrow(const M &x) {
    return __builtin_convertvector(x, vi32);
}

// exp(-s). Arguments are clamped to [0, 30]: exp(-30) * opacity is far below the 1/255 alpha
// threshold, and the clamp keeps masked lanes (pixels far from the Gaussian) clear of slow
// denormals. Float: Cephes-style polynomial (about 1 ulp, like CUDA's __expf that gsplat
// uses); double: std::exp per lane (the precise path the tests compare against).
Z1_INLINE Vec<float>::v exp_neg(Vec<float>::v s) {
    using vf = Vec<float>::v;
    using vi = Vec<float>::m;
    vf x = -s;
    x = x < -30.0f ? splat<vf>(-30.0f) : x;
    x = x > 0.0f ? splat<vf>(0.0f) : x;
    const vf n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round(x / ln 2)
    vf r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    vf p = splat<vf>(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    const vi bits = (__builtin_convertvector(n, vi) + 127) << 23;  // 2^n
    return p * (vf)bits;
}
Z1_INLINE Vec<double>::v exp_neg(Vec<double>::v s) {
    Vec<double>::v r;
    for (int i = 0; i < VW; ++i) r[i] = std::exp(-std::min(std::max(s[i], 0.0), 30.0));
    return r;
}

// Per-thread scratch for one tile. Per-pixel channel arrays are channel-major ([D][TP]) so
// a tile row of one channel is contiguous.
template <typename S>
struct Workspace {
    std::vector<S> T, acc, Tf, va, vc, buf, gcol;
    std::vector<int32_t> last, done;
    explicit Workspace(int64_t D)
        : T(TP), acc(TP * D), Tf(TP), va(TP), vc(TP * D), buf(TP * D), gcol(VW * D), last(TP), done(TP) {}
};

// Geometry of one (image, tile) task.
struct TileGeom {
    int64_t img;
    int32_t x0, y0, tw, th;
};

template <typename scalar_t>
inline TileGeom tile_geom(const Scene<scalar_t> &s, int64_t task) {
    const int64_t tiles = s.TW * s.TH;
    const int64_t t = task % tiles;
    TileGeom g;
    g.img = task / tiles;
    g.x0 = static_cast<int32_t>((t % s.TW) * TS);
    g.y0 = static_cast<int32_t>((t / s.TW) * TS);
    g.tw = static_cast<int32_t>(std::min<int64_t>(TS, s.W - g.x0));
    g.th = static_cast<int32_t>(std::min<int64_t>(TS, s.H - g.y0));
    return g;
}

// The part of a Gaussian's box inside the tile: rows [iy0, iy1] and the vector chunks
// [h0, h1) of each row (column offsets, multiples of VW) that overlap its columns; with 16-lane
// vectors that is the whole row, with 4 lanes it skips the chunks the box misses.
// False if the box misses the tile.
template <typename scalar_t>
inline bool gaussian_rows(const Scene<scalar_t> &s, int64_t q, const TileGeom &tg, int32_t &iy0, int32_t &iy1,
                          int32_t &h0, int32_t &h1) {
    int32_t jx0, jx1;
    pixel_span(s.means2d[2 * q], s.radii[2 * q], static_cast<int32_t>(s.W), jx0, jx1);
    pixel_span(s.means2d[2 * q + 1], s.radii[2 * q + 1], static_cast<int32_t>(s.H), iy0, iy1);
    jx0 = std::max(jx0, tg.x0);
    jx1 = std::min(jx1, tg.x0 + tg.tw - 1);
    if (jx0 > jx1) return false;
    h0 = ((jx0 - tg.x0) / VW) * VW;
    h1 = ((jx1 - tg.x0) / VW + 1) * VW;
    iy0 = std::max(iy0, tg.y0);
    iy1 = std::min(iy1, tg.y0 + tg.th - 1);
    return iy0 <= iy1;
}

// ---------------------------------------------------------------------------------------
// Forward.
// Returns colour [I, H, W, D], transmittance T [I, H, W] (alpha = 1 - T) and, per pixel,
// the index into `ids` of the last Gaussian that contributed (-1 when none).
// ---------------------------------------------------------------------------------------
template <typename scalar_t>
void forward_tile(const Scene<scalar_t> &s, int64_t task, scalar_t *out_color, scalar_t *out_T,
                  int32_t *out_last, Workspace<scalar_t> &ws) {
    using S = scalar_t;
    using vf = typename Vec<S>::v;
    using vm = typename Vec<S>::m;
    const S alpha_min = S(1.0 / 255.0), alpha_max = S(0.999), T_min = S(1e-4);
    const TileGeom tg = tile_geom(s, task);
    const int64_t D = s.D;
    S *__restrict T = ws.T.data();
    S *__restrict acc = ws.acc.data();
    int32_t *__restrict last = ws.last.data();
    int32_t *__restrict done = ws.done.data();
    std::fill(T, T + TP, S(1));
    std::fill(acc, acc + TP * D, S(0));
    std::fill(last, last + TP, int32_t(-1));
    int32_t ndone = 0;  // pixels finished, or outside the image (never drawn)
    for (int32_t p = 0; p < TP; ++p) {
        const bool outside = (p % TS) >= tg.tw || (p / TS) >= tg.th;
        done[p] = outside ? 1 : 0;
        ndone += outside ? 1 : 0;
    }
    vf lane;
    for (int i = 0; i < VW; ++i) lane[i] = S(i);

    const int64_t start = s.offsets[task], end = s.offsets[task + 1];
    const int64_t base = tg.img * s.N;
    for (int64_t k = start; k < end && ndone < TP; ++k) {
        const int64_t q = base + s.ids[k];
        int32_t iy0, iy1, h0, h1;
        if (!gaussian_rows(s, q, tg, iy0, iy1, h0, h1)) continue;
        const S mx = s.means2d[2 * q], my = s.means2d[2 * q + 1];
        const S ca = s.conics[3 * q], cb = s.conics[3 * q + 1], cc = s.conics[3 * q + 2];
        const S o = s.opac[q];
        const S *col = s.colors + q * D;
        const vi32 kv = splat<vi32>(static_cast<int32_t>(k));
        vi32 newly = vi32{};
        for (int32_t i = iy0; i <= iy1; ++i) {
            const S dy = my - (S(i) + S(0.5));
            const S cyy = S(0.5) * cc * dy * dy;
            for (int32_t h = h0; h < h1; h += VW) {
                const int32_t off = (i - tg.y0) * TS + h;
                const vf dx = (mx - (S(tg.x0 + h) + S(0.5))) - lane;
                const vf sigma = S(0.5) * ca * dx * dx + cyy + cb * dx * dy;
                const vf a0 = o * exp_neg(sigma);
                const vf alpha = a0 < alpha_max ? a0 : splat<vf>(alpha_max);
                const vi32 dn = vload<vi32>(done + off);
                const vm cond = (widen<vm>(dn) == 0) & (sigma >= S(0)) & (alpha >= alpha_min);
                const vf Tc = vload<vf>(T + off);
                const vf nT = Tc * (S(1) - alpha);
                const vm stop = cond & (nT <= T_min);
                const vm use = cond & ~stop;
                const vf w = use ? alpha * Tc : splat<vf>(S(0));
                vstore(T + off, use ? nT : Tc);
                const vi32 use32 = narrow(use), stop32 = narrow(stop) & 1;
                vstore(last + off, use32 ? kv : vload<vi32>(last + off));
                vstore(done + off, dn | stop32);
                newly += stop32;
                for (int64_t d = 0; d < D; ++d) {
                    S *ar = acc + d * TP + off;
                    vstore(ar, vload<vf>(ar) + col[d] * w);
                }
            }
        }
        ndone += hsum(newly);
    }

    const S *bg = s.bg ? s.bg + tg.img * D : nullptr;
    for (int32_t pi = 0; pi < tg.th; ++pi) {
        for (int32_t pj = 0; pj < tg.tw; ++pj) {
            const int32_t p = pi * TS + pj;
            const int64_t pix = (tg.img * s.H + (tg.y0 + pi)) * s.W + (tg.x0 + pj);
            S *oc = out_color + pix * D;
            const S Tp = T[p];
            for (int64_t d = 0; d < D; ++d) oc[d] = acc[d * TP + p] + (bg ? Tp * bg[d] : S(0));
            out_T[pix] = Tp;
            out_last[pix] = last[p];
        }
    }
}

template <typename scalar_t>
std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_impl(const Scene<scalar_t> &s, int64_t threads,
                                                            at::ScalarType st) {
    auto opts = at::TensorOptions().dtype(st);
    at::Tensor color = at::empty({s.I, s.H, s.W, s.D}, opts);
    at::Tensor T = at::empty({s.I, s.H, s.W}, opts);
    at::Tensor last = at::empty({s.I, s.H, s.W}, at::TensorOptions().dtype(at::kInt));
    scalar_t *pc = color.data_ptr<scalar_t>();
    scalar_t *pT = T.data_ptr<scalar_t>();
    int32_t *pl = last.data_ptr<int32_t>();
    const int64_t ntasks = s.I * s.TW * s.TH;
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        Workspace<scalar_t> ws(s.D);
#pragma omp for schedule(dynamic, 1)
        for (int64_t task = 0; task < ntasks; ++task) forward_tile<scalar_t>(s, task, pc, pT, pl, ws);
    }
    return {color, T, last};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> composite_forward(
    const at::Tensor &means2d, const at::Tensor &conics, const at::Tensor &opac,
    const at::Tensor &colors, const c10::optional<at::Tensor> &bg, const at::Tensor &radii,
    const at::Tensor &offsets, const at::Tensor &ids, int64_t width, int64_t height, int64_t tile,
    int64_t threads) {
    check_inputs(means2d, conics, opac, colors, bg, radii, offsets, ids, width, height, tile);
    TORCH_CHECK(tile == TS, "the C++ compositor works on 16 px tiles");
    if (means2d.scalar_type() == at::kDouble)
        return forward_impl<double>(
            make_scene<double>(means2d, conics, opac, colors, bg, radii, offsets, ids, width, height, tile),
            threads, at::kDouble);
    return forward_impl<float>(
        make_scene<float>(means2d, conics, opac, colors, bg, radii, offsets, ids, width, height, tile),
        threads, at::kFloat);
}

// ---------------------------------------------------------------------------------------
// Backward: back to front per pixel, recovering T by division (as gsplat does).
// Per-pair gradients go to pair_grad [M, 6 + D]: (mean x, mean y, conic a, b, c, opacity,
// colour...). Background gradients per task go to bg_grad [tasks, D].
// ---------------------------------------------------------------------------------------
template <typename scalar_t>
void backward_tile(const Scene<scalar_t> &s, int64_t task, const scalar_t *T_final, const int32_t *last_in,
                   const scalar_t *v_color, const scalar_t *v_T, scalar_t *pair_grad, scalar_t *bg_grad,
                   Workspace<scalar_t> &ws) {
    using S = scalar_t;
    using vf = typename Vec<S>::v;
    using vm = typename Vec<S>::m;
    const S alpha_min = S(1.0 / 255.0), alpha_max = S(0.999);
    const TileGeom tg = tile_geom(s, task);
    const int64_t D = s.D;
    const int64_t G = 6 + D;
    const S *bg = s.bg ? s.bg + tg.img * D : nullptr;
    S *vbg = bg_grad + task * D;
    for (int64_t d = 0; d < D; ++d) vbg[d] = S(0);
    S *__restrict Tb = ws.T.data();
    S *__restrict Tf = ws.Tf.data();
    S *__restrict va = ws.va.data();
    S *__restrict vc = ws.vc.data();
    S *__restrict buf = ws.buf.data();
    S *__restrict gcolv = ws.gcol.data();
    int32_t *__restrict last = ws.last.data();
    std::fill(Tb, Tb + TP, S(1));
    std::fill(Tf, Tf + TP, S(1));
    std::fill(va, va + TP, S(0));
    std::fill(vc, vc + TP * D, S(0));
    std::fill(buf, buf + TP * D, S(0));
    std::fill(last, last + TP, int32_t(-1));  // pixels outside the image never match

    int32_t kmax = -1;
    int32_t row_last[TS];  // per tile row: the deepest contributor, so rows behind it are skipped
    std::fill(row_last, row_last + TS, int32_t(-1));
    for (int32_t pi = 0; pi < tg.th; ++pi) {
        for (int32_t pj = 0; pj < tg.tw; ++pj) {
            const int32_t p = pi * TS + pj;
            const int64_t pix = (tg.img * s.H + (tg.y0 + pi)) * s.W + (tg.x0 + pj);
            const S T = T_final[pix];
            Tb[p] = T;
            Tf[p] = T;
            last[p] = last_in[pix];
            kmax = std::max(kmax, last[p]);
            row_last[pi] = std::max(row_last[pi], last[p]);
            // gsplat's per-pixel alpha gradient: -dL/dT, and the background term
            // (colour += T * bg) enters as -bg . dL/dcolour.
            S bgdot = S(0);
            for (int64_t d = 0; d < D; ++d) {
                const S g = v_color[pix * D + d];
                vc[d * TP + p] = g;
                if (bg) {
                    bgdot += bg[d] * g;
                    vbg[d] += T * g;
                }
            }
            va[p] = -v_T[pix] - bgdot;
        }
    }
    vf lane;
    for (int i = 0; i < VW; ++i) lane[i] = S(i);

    const int64_t start = s.offsets[task];
    const int64_t base = tg.img * s.N;
    for (int64_t k = kmax; k >= start; --k) {
        S *pg = pair_grad + k * G;
        for (int64_t e = 0; e < G; ++e) pg[e] = S(0);
        const int64_t q = base + s.ids[k];
        int32_t iy0, iy1, h0, h1;
        if (!gaussian_rows(s, q, tg, iy0, iy1, h0, h1)) continue;
        const S mx = s.means2d[2 * q], my = s.means2d[2 * q + 1];
        const S ca = s.conics[3 * q], cb = s.conics[3 * q + 1], cc = s.conics[3 * q + 2];
        const S o = s.opac[q];
        const S *col = s.colors + q * D;
        const vi32 kv = splat<vi32>(static_cast<int32_t>(k));
        vf gx = vf{}, gy = vf{}, ga = vf{}, gb = vf{}, gc = vf{}, go = vf{};
        std::fill(gcolv, gcolv + VW * D, S(0));
        for (int32_t i = iy0; i <= iy1; ++i) {
            if (row_last[i - tg.y0] < k) continue;
            const S dy = my - (S(i) + S(0.5));
            const S cyy = S(0.5) * cc * dy * dy;
            for (int32_t h = h0; h < h1; h += VW) {
                const int32_t off = (i - tg.y0) * TS + h;
                const vf dx = (mx - (S(tg.x0 + h) + S(0.5))) - lane;
                const vf sigma = S(0.5) * ca * dx * dx + cyy + cb * dx * dy;
                const vf vis = exp_neg(sigma);
                const vf a0 = o * vis;
                const vf alpha = a0 < alpha_max ? a0 : splat<vf>(alpha_max);
                const vm cond = widen<vm>(vload<vi32>(last + off) >= kv) & (sigma >= S(0)) & (alpha >= alpha_min);
                // Transmittance in front of this Gaussian, recovered from the one behind it.
                const vf ra = S(1) / (S(1) - alpha);
                const vf Told = vload<vf>(Tb + off);
                const vf Tn = Told * ra;
                vstore(Tb + off, cond ? Tn : Told);
                const vf zero = splat<vf>(S(0));
                const vf fac = cond ? alpha * Tn : zero;
                const vf rr = cond ? ra : zero;
                const vf Tj = cond ? Tn : zero;
                // d pixel / d alpha, starting with the alpha output's own term.
                vf v_alpha = cond ? vload<vf>(Tf + off) * ra * vload<vf>(va + off) : zero;
                for (int64_t d = 0; d < D; ++d) {
                    const vf g = vload<vf>(vc + d * TP + off);
                    S *br = buf + d * TP + off;
                    const vf b = vload<vf>(br);
                    S *gcd = gcolv + d * VW;
                    vstore(gcd, vload<vf>(gcd) + fac * g);
                    v_alpha += (col[d] * Tj - b * rr) * g;
                    vstore(br, b + col[d] * fac);
                }
                // Through alpha = o * exp(-sigma); no gradient where the 0.999 clamp is active.
                const vf on = (cond & (a0 <= alpha_max)) ? vis : zero;
                const vf v_sigma = -o * on * v_alpha;
                ga += S(0.5) * v_sigma * dx * dx;
                gb += v_sigma * dx * dy;
                gc += S(0.5) * v_sigma * dy * dy;
                gx += v_sigma * (ca * dx + cb * dy);
                gy += v_sigma * (cb * dx + cc * dy);
                go += on * v_alpha;
            }
        }
        pg[0] = hsum(gx);
        pg[1] = hsum(gy);
        pg[2] = hsum(ga);
        pg[3] = hsum(gb);
        pg[4] = hsum(gc);
        pg[5] = hsum(go);
        for (int64_t d = 0; d < D; ++d) pg[6 + d] = hsum(vload<vf>(gcolv + d * VW));
    }
    // Pairs behind every pixel's last contributor get no gradient.
    const int64_t end = s.offsets[task + 1];
    for (int64_t k = std::max<int64_t>(kmax + 1, start); k < end; ++k)
        for (int64_t e = 0; e < G; ++e) pair_grad[k * G + e] = S(0);
}

template <typename scalar_t>
std::vector<at::Tensor> backward_impl(const Scene<scalar_t> &s, const at::Tensor &T_final,
                                      const at::Tensor &last, const at::Tensor &v_color,
                                      const at::Tensor &v_T, int64_t threads, at::ScalarType st) {
    auto opts = at::TensorOptions().dtype(st);
    const int64_t ntasks = s.I * s.TW * s.TH;
    const int64_t M = s.offsets[ntasks];
    const int64_t D = s.D, G = 6 + D;
    at::Tensor pair_grad = at::empty({M, G}, opts);
    at::Tensor bg_grad_tasks = at::empty({ntasks, D}, opts);
    scalar_t *pg = pair_grad.data_ptr<scalar_t>();
    scalar_t *pbg = bg_grad_tasks.data_ptr<scalar_t>();
    const scalar_t *pTf = T_final.data_ptr<scalar_t>();
    const int32_t *pl = last.data_ptr<int32_t>();
    const scalar_t *pvc = v_color.data_ptr<scalar_t>();
    const scalar_t *pvT = v_T.data_ptr<scalar_t>();
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        Workspace<scalar_t> ws(D);
#pragma omp for schedule(dynamic, 1)
        for (int64_t task = 0; task < ntasks; ++task)
            backward_tile<scalar_t>(s, task, pTf, pl, pvc, pvT, pg, pbg, ws);
    }

    // Sum pair gradients per Gaussian in a fixed order (deterministic), one image per task.
    at::Tensor v_means2d = at::zeros({s.I, s.N, 2}, opts);
    at::Tensor v_conics = at::zeros({s.I, s.N, 3}, opts);
    at::Tensor v_opac = at::zeros({s.I, s.N}, opts);
    at::Tensor v_colors = at::zeros({s.I, s.N, D}, opts);
    at::Tensor v_bg = at::zeros({s.I, D}, opts);
    scalar_t *vm = v_means2d.data_ptr<scalar_t>();
    scalar_t *vcn = v_conics.data_ptr<scalar_t>();
    scalar_t *vo = v_opac.data_ptr<scalar_t>();
    scalar_t *vcol = v_colors.data_ptr<scalar_t>();
    scalar_t *vb = v_bg.data_ptr<scalar_t>();
    const int64_t tiles = s.TW * s.TH;
#pragma omp parallel for num_threads(threads) if (threads > 1 && s.I > 1) schedule(static, 1)
    for (int64_t img = 0; img < s.I; ++img) {
        const int64_t k0 = s.offsets[img * tiles], k1 = s.offsets[(img + 1) * tiles];
        for (int64_t k = k0; k < k1; ++k) {
            const int64_t q = img * s.N + s.ids[k];
            const scalar_t *src = pg + k * G;
            vm[2 * q] += src[0];
            vm[2 * q + 1] += src[1];
            vcn[3 * q] += src[2];
            vcn[3 * q + 1] += src[3];
            vcn[3 * q + 2] += src[4];
            vo[q] += src[5];
            for (int64_t d = 0; d < D; ++d) vcol[q * D + d] += src[6 + d];
        }
        for (int64_t t = 0; t < tiles; ++t)
            for (int64_t d = 0; d < D; ++d) vb[img * D + d] += pbg[(img * tiles + t) * D + d];
    }
    return {v_means2d, v_conics, v_opac, v_colors, v_bg};
}

std::vector<at::Tensor> composite_backward(
    const at::Tensor &means2d, const at::Tensor &conics, const at::Tensor &opac,
    const at::Tensor &colors, const c10::optional<at::Tensor> &bg, const at::Tensor &radii,
    const at::Tensor &offsets, const at::Tensor &ids, int64_t width, int64_t height, int64_t tile,
    const at::Tensor &T_final, const at::Tensor &last, const at::Tensor &v_color,
    const at::Tensor &v_T, int64_t threads) {
    check_inputs(means2d, conics, opac, colors, bg, radii, offsets, ids, width, height, tile);
    TORCH_CHECK(tile == TS, "the C++ compositor works on 16 px tiles");
    check_cpu_contig(T_final, "T_final");
    check_cpu_contig(last, "last");
    check_cpu_contig(v_color, "v_color");
    check_cpu_contig(v_T, "v_T");
    const auto st = means2d.scalar_type();
    TORCH_CHECK(T_final.scalar_type() == st && v_color.scalar_type() == st && v_T.scalar_type() == st,
                "T_final, v_color and v_T must share the colors' dtype");
    TORCH_CHECK(last.scalar_type() == at::kInt, "last must be int32");
    const int64_t I = means2d.size(0);
    TORCH_CHECK(v_color.numel() == I * height * width * colors.size(2), "v_color has the wrong size");
    TORCH_CHECK(v_T.numel() == I * height * width && T_final.numel() == I * height * width &&
                    last.numel() == I * height * width,
                "per-pixel buffers have the wrong size");
    if (st == at::kDouble)
        return backward_impl<double>(
            make_scene<double>(means2d, conics, opac, colors, bg, radii, offsets, ids, width, height, tile),
            T_final, last, v_color, v_T, threads, at::kDouble);
    return backward_impl<float>(
        make_scene<float>(means2d, conics, opac, colors, bg, radii, offsets, ids, width, height, tile),
        T_final, last, v_color, v_T, threads, at::kFloat);
}

}  // namespace

TORCH_LIBRARY(zero1toa_cpu, m) {
    m.def("bin_gaussians", &bin_gaussians);
    m.def("composite_forward", &composite_forward);
    m.def("composite_backward", &composite_backward);
}
