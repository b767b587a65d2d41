// EWA projection of 3D Gaussians (forward + analytic backward) for the CPU rasterizer.
//
// Why: with the compositor in C++, the ~100 small autograd ops of the torch projection were
// the largest remaining cost of a CPU training step. This computes, per (camera, Gaussian),
// exactly what zero1toa.render.cpu_rasterizer.project_gaussians computes (gsplat 1.5.3
// semantics: 1.3x-FOV clamp of the Jacobian, eps2d blur, opacity-aware radius, culling), and
// the vector-Jacobian product back to means, quats and scales. Camera matrices get no
// gradient here (the Python side falls back to the torch projection when they need one).
//
// Row-major 3x3 matrices as scalar_t[9]. Backward loops over Gaussians and sums over cameras
// inside, so there are no races and results do not depend on the thread count.

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <tuple>
#include <vector>

namespace {

template <typename S>
struct Mat3 {
    S m[9];
    S &operator()(int i, int j) { return m[3 * i + j]; }
    S operator()(int i, int j) const { return m[3 * i + j]; }
};

template <typename S>
Mat3<S> matmul(const Mat3<S> &a, const Mat3<S> &b) {
    Mat3<S> c;
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) c(i, j) = a(i, 0) * b(0, j) + a(i, 1) * b(1, j) + a(i, 2) * b(2, j);
    return c;
}

template <typename S>
Mat3<S> matmul_bt(const Mat3<S> &a, const Mat3<S> &b) {  // a b^T
    Mat3<S> c;
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) c(i, j) = a(i, 0) * b(j, 0) + a(i, 1) * b(j, 1) + a(i, 2) * b(j, 2);
    return c;
}

template <typename S>
Mat3<S> matmul_at(const Mat3<S> &a, const Mat3<S> &b) {  // a^T b
    Mat3<S> c;
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) c(i, j) = a(0, i) * b(0, j) + a(1, i) * b(1, j) + a(2, i) * b(2, j);
    return c;
}

// Rotation from a normalised wxyz quaternion.
template <typename S>
Mat3<S> quat_rot(S w, S x, S y, S z) {
    Mat3<S> R;
    R(0, 0) = 1 - 2 * (y * y + z * z);
    R(0, 1) = 2 * (x * y - w * z);
    R(0, 2) = 2 * (x * z + w * y);
    R(1, 0) = 2 * (x * y + w * z);
    R(1, 1) = 1 - 2 * (x * x + z * z);
    R(1, 2) = 2 * (y * z - w * x);
    R(2, 0) = 2 * (x * z - w * y);
    R(2, 1) = 2 * (y * z + w * x);
    R(2, 2) = 1 - 2 * (x * x + y * y);
    return R;
}

// Everything the forward computes for one (camera, Gaussian), reused by the backward.
template <typename S>
struct Proj {
    bool valid;
    S qw, qx, qy, qz, qn;  // normalised quaternion and the original norm
    Mat3<S> Rq, M, Rv, covc;  // M = Rq diag(s); covc = Rv M M^T Rv^T
    S mc[3];                  // camera-space mean
    S tx, ty;                 // clamped evaluation point
    bool clamp_x, clamp_y;
    S j00, j02, j11, j12;     // Jacobian entries
    S c00, c01, c11, det;     // blurred 2D covariance
    S u, v;                   // means2d
    int32_t rx, ry;
};

// Computes in double whatever the storage type T: float32 loses too much for needle-like
// Gaussians close to the camera (nearly singular 2D covariances), and this step is cheap.
template <typename T>
void project_one(const T *mean_t, const T *quat_t, const T *scale_t, T opacity_t, const T *view_t, const T *K_t,
                 int64_t W, int64_t H, double eps2d, double near_plane, double far_plane, Proj<double> &p,
                 bool geometry_only = false) {
    // geometry_only: the backward already knows (from the forward's radii) that this entry is
    // visible and only needs the intermediates, not the culling tests.
    using S = double;
    S mean[3], quat[4], scale[3], view[16], K[9];
    for (int i = 0; i < 3; ++i) mean[i] = mean_t[i], scale[i] = scale_t[i];
    for (int i = 0; i < 4; ++i) quat[i] = quat_t[i];
    for (int i = 0; i < 16; ++i) view[i] = view_t[i];
    for (int i = 0; i < 9; ++i) K[i] = K_t[i];
    const S opacity = opacity_t;
    p.valid = false;
    p.rx = p.ry = 0;
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) p.Rv(i, j) = view[4 * i + j];
    for (int i = 0; i < 3; ++i)
        p.mc[i] = p.Rv(i, 0) * mean[0] + p.Rv(i, 1) * mean[1] + p.Rv(i, 2) * mean[2] + view[4 * i + 3];
    const S z = p.mc[2];
    if (!(z >= near_plane && z <= far_plane)) return;
    const S qn = std::sqrt(quat[0] * quat[0] + quat[1] * quat[1] + quat[2] * quat[2] + quat[3] * quat[3]);
    const S iq = S(1) / std::max(qn, S(1e-12));
    p.qn = qn;
    p.qw = quat[0] * iq;
    p.qx = quat[1] * iq;
    p.qy = quat[2] * iq;
    p.qz = quat[3] * iq;
    p.Rq = quat_rot(p.qw, p.qx, p.qy, p.qz);
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) p.M(i, j) = p.Rq(i, j) * scale[j];
    const Mat3<S> VM = matmul(p.Rv, p.M);  // Rv M
    p.covc = matmul_bt(VM, VM);

    const S fx = K[0], cx = K[2], fy = K[4], cy = K[5];
    const S x = p.mc[0], y = p.mc[1];
    const S tan_x = S(0.5) * S(W) / fx, tan_y = S(0.5) * S(H) / fy;
    const S lim_xp = (S(W) - cx) / fx + S(0.3) * tan_x, lim_xn = cx / fx + S(0.3) * tan_x;
    const S lim_yp = (S(H) - cy) / fy + S(0.3) * tan_y, lim_yn = cy / fy + S(0.3) * tan_y;
    const S rz = S(1) / z;
    const S xr = x * rz, yr = y * rz;
    p.clamp_x = !(xr <= lim_xp && xr >= -lim_xn);
    p.clamp_y = !(yr <= lim_yp && yr >= -lim_yn);
    p.tx = z * std::min(lim_xp, std::max(-lim_xn, xr));
    p.ty = z * std::min(lim_yp, std::max(-lim_yn, yr));
    p.j00 = fx * rz;
    p.j02 = -fx * p.tx * rz * rz;
    p.j11 = fy * rz;
    p.j12 = -fy * p.ty * rz * rz;
    const Mat3<S> &s = p.covc;
    p.c00 = p.j00 * p.j00 * s(0, 0) + 2 * p.j00 * p.j02 * s(0, 2) + p.j02 * p.j02 * s(2, 2) + eps2d;
    p.c01 = p.j00 * p.j11 * s(0, 1) + p.j00 * p.j12 * s(0, 2) + p.j02 * p.j11 * s(1, 2) + p.j02 * p.j12 * s(2, 2);
    p.c11 = p.j11 * p.j11 * s(1, 1) + 2 * p.j11 * p.j12 * s(1, 2) + p.j12 * p.j12 * s(2, 2) + eps2d;
    p.det = p.c00 * p.c11 - p.c01 * p.c01;
    if (geometry_only) {
        p.valid = p.det > 0;
        return;
    }
    if (!(p.det > 0)) return;
    const S alpha_min = S(1.0 / 255.0);
    if (!(opacity >= alpha_min)) return;
    const S extend = std::min(S(3.33), std::sqrt(S(2) * std::log(opacity / alpha_min)));
    const S radx = std::ceil(extend * std::sqrt(std::max(p.c00, S(0))));
    const S rady = std::ceil(extend * std::sqrt(std::max(p.c11, S(0))));
    p.u = fx * x * rz + cx;
    p.v = fy * y * rz + cy;
    if (!(radx > 0 || rady > 0)) return;
    if (!(p.u + radx > 0 && p.u - radx < S(W) && p.v + rady > 0 && p.v - rady < S(H))) return;
    p.valid = true;
    p.rx = static_cast<int32_t>(radx);
    p.ry = static_cast<int32_t>(rady);
}

void check_proj_inputs(const at::Tensor &means, const at::Tensor &quats, const at::Tensor &scales,
                       const at::Tensor &opac, const at::Tensor &viewmats, const at::Tensor &Ks) {
    for (auto *t : {&means, &quats, &scales, &opac, &viewmats, &Ks}) {
        TORCH_CHECK(t->device().is_cpu() && t->is_contiguous(), "projection inputs must be contiguous CPU tensors");
        TORCH_CHECK(t->scalar_type() == means.scalar_type(), "projection inputs must share one dtype");
    }
    const int64_t N = means.size(0), C = viewmats.size(0);
    TORCH_CHECK(means.dim() == 2 && means.size(1) == 3, "means must be [N, 3]");
    TORCH_CHECK(quats.dim() == 2 && quats.size(0) == N && quats.size(1) == 4, "quats must be [N, 4]");
    TORCH_CHECK(scales.dim() == 2 && scales.size(0) == N && scales.size(1) == 3, "scales must be [N, 3]");
    TORCH_CHECK(opac.dim() == 1 && opac.size(0) == N, "opacities must be [N]");
    TORCH_CHECK(viewmats.dim() == 3 && viewmats.size(1) == 4 && viewmats.size(2) == 4, "viewmats must be [C, 4, 4]");
    TORCH_CHECK(Ks.dim() == 3 && Ks.size(0) == C && Ks.size(1) == 3 && Ks.size(2) == 3, "Ks must be [C, 3, 3]");
}

template <typename S>
std::vector<at::Tensor> project_forward_impl(const at::Tensor &means, const at::Tensor &quats,
                                             const at::Tensor &scales, const at::Tensor &opac,
                                             const at::Tensor &viewmats, const at::Tensor &Ks,
                                             int64_t W, int64_t H, double eps2d, double near_plane,
                                             double far_plane, int64_t threads) {
    const int64_t N = means.size(0), C = viewmats.size(0);
    auto opts = at::TensorOptions().dtype(means.scalar_type());
    at::Tensor radii = at::zeros({C, N, 2}, at::TensorOptions().dtype(at::kInt));
    at::Tensor means2d = at::zeros({C, N, 2}, opts);
    at::Tensor depths = at::zeros({C, N}, opts);
    at::Tensor conics = at::zeros({C, N, 3}, opts);
    const S *pm = means.data_ptr<S>(), *pq = quats.data_ptr<S>(), *ps = scales.data_ptr<S>();
    const S *po = opac.data_ptr<S>(), *pv = viewmats.data_ptr<S>(), *pk = Ks.data_ptr<S>();
    int32_t *rr = radii.data_ptr<int32_t>();
    S *m2 = means2d.data_ptr<S>(), *dd = depths.data_ptr<S>(), *cc = conics.data_ptr<S>();
#pragma omp parallel for num_threads(threads) if (threads > 1 && C * N > 4096) schedule(static)
    for (int64_t idx = 0; idx < C * N; ++idx) {
        const int64_t c = idx / N, g = idx % N;
        Proj<double> p;
        project_one<S>(pm + 3 * g, pq + 4 * g, ps + 3 * g, po[g], pv + 16 * c, pk + 9 * c, W, H, eps2d,
                       near_plane, far_plane, p);
        if (!p.valid) continue;
        rr[2 * idx] = p.rx;
        rr[2 * idx + 1] = p.ry;
        m2[2 * idx] = static_cast<S>(p.u);
        m2[2 * idx + 1] = static_cast<S>(p.v);
        dd[idx] = static_cast<S>(p.mc[2]);
        const double idet = 1.0 / p.det;
        cc[3 * idx] = static_cast<S>(p.c11 * idet);
        cc[3 * idx + 1] = static_cast<S>(-p.c01 * idet);
        cc[3 * idx + 2] = static_cast<S>(p.c00 * idet);
    }
    return {radii, means2d, depths, conics};
}

std::vector<at::Tensor> project_forward(const at::Tensor &means, const at::Tensor &quats,
                                        const at::Tensor &scales, const at::Tensor &opac,
                                        const at::Tensor &viewmats, const at::Tensor &Ks, int64_t W,
                                        int64_t H, double eps2d, double near_plane, double far_plane,
                                        int64_t threads) {
    check_proj_inputs(means, quats, scales, opac, viewmats, Ks);
    if (means.scalar_type() == at::kDouble)
        return project_forward_impl<double>(means, quats, scales, opac, viewmats, Ks, W, H, eps2d, near_plane,
                                            far_plane, threads);
    TORCH_CHECK(means.scalar_type() == at::kFloat, "projection inputs must be float32 or float64");
    return project_forward_impl<float>(means, quats, scales, opac, viewmats, Ks, W, H, eps2d, near_plane,
                                       far_plane, threads);
}

template <typename T>
std::vector<at::Tensor> project_backward_impl(const at::Tensor &means, const at::Tensor &quats,
                                              const at::Tensor &scales, const at::Tensor &opac,
                                              const at::Tensor &viewmats, const at::Tensor &Ks,
                                              int64_t W, int64_t H, double eps2d, double near_plane,
                                              double far_plane, const at::Tensor &radii,
                                              const at::Tensor &v_means2d, const at::Tensor &v_depths,
                                              const at::Tensor &v_conics, int64_t threads) {
    using S = double;  // arithmetic type; T is the storage type
    const int64_t N = means.size(0), C = viewmats.size(0);
    auto opts = at::TensorOptions().dtype(means.scalar_type());
    at::Tensor v_means = at::zeros({N, 3}, opts);
    at::Tensor v_quats = at::zeros({N, 4}, opts);
    at::Tensor v_scales = at::zeros({N, 3}, opts);
    const T *pm = means.data_ptr<T>(), *pq = quats.data_ptr<T>(), *ps = scales.data_ptr<T>();
    const T *po = opac.data_ptr<T>(), *pv = viewmats.data_ptr<T>(), *pk = Ks.data_ptr<T>();
    const T *gm2 = v_means2d.data_ptr<T>(), *gd = v_depths.data_ptr<T>(), *gc = v_conics.data_ptr<T>();
    const int32_t *rr = radii.data_ptr<int32_t>();
    T *om = v_means.data_ptr<T>(), *oq = v_quats.data_ptr<T>(), *os = v_scales.data_ptr<T>();
#pragma omp parallel for num_threads(threads) if (threads > 1 && C * N > 4096) schedule(static)
    for (int64_t g = 0; g < N; ++g) {
        Mat3<S> vM_total{};  // d loss / d M (M = Rq diag(s)), summed over cameras
        for (auto &e : vM_total.m) e = 0;
        S vmean[3] = {0, 0, 0};
        bool any = false;
        Proj<double> p;
        for (int64_t c = 0; c < C; ++c) {
            const int64_t idx = c * N + g;
            if (rr[2 * idx] <= 0 && rr[2 * idx + 1] <= 0) continue;  // culled in the forward
            project_one<T>(pm + 3 * g, pq + 4 * g, ps + 3 * g, po[g], pv + 16 * c, pk + 9 * c, W, H, eps2d,
                           near_plane, far_plane, p, /*geometry_only=*/true);
            if (!p.valid) continue;
            any = true;
            const S fx = pk[9 * c], fy = pk[9 * c + 4];
            const S z = p.mc[2], rz = S(1) / z, rz2 = rz * rz, rz3 = rz2 * rz;
            // conic = inverse(cov2): d cov2 = -K G K with G the symmetric conic gradient. Written
            // with the adjugate A of cov2 (K = A / det) and one division at the end, which keeps
            // float32 accurate for nearly degenerate (needle-like) 2D covariances.
            const S A00 = p.c11, A01 = -p.c01, A11 = p.c00;
            const S g00 = gc[3 * idx], g01 = S(0.5) * gc[3 * idx + 1], g11 = gc[3 * idx + 2];
            const S a00 = A00 * g00 + A01 * g01, a01 = A00 * g01 + A01 * g11;  // A G
            const S a10 = A01 * g00 + A11 * g01, a11 = A01 * g01 + A11 * g11;
            const S idet2 = S(1) / (p.det * p.det);
            const S V00 = -(a00 * A00 + a01 * A01) * idet2, V01 = -(a00 * A01 + a01 * A11) * idet2;
            const S V10 = -(a10 * A00 + a11 * A01) * idet2, V11 = -(a10 * A01 + a11 * A11) * idet2;
            // J (2x3): [[j00, 0, j02], [0, j11, j12]]
            const S J[2][3] = {{p.j00, 0, p.j02}, {0, p.j11, p.j12}};
            const S V[2][2] = {{V00, V01}, {V10, V11}};
            // v_covc = J^T V J  (3x3)
            Mat3<S> vcov;
            for (int i = 0; i < 3; ++i)
                for (int j = 0; j < 3; ++j) {
                    S acc = 0;
                    for (int a = 0; a < 2; ++a)
                        for (int b = 0; b < 2; ++b) acc += J[a][i] * V[a][b] * J[b][j];
                    vcov(i, j) = acc;
                }
            // v_J = V J covc^T + V^T J covc  (2x3)
            S JS[2][3];
            for (int a = 0; a < 2; ++a)
                for (int j = 0; j < 3; ++j)
                    JS[a][j] = J[a][0] * p.covc(0, j) + J[a][1] * p.covc(1, j) + J[a][2] * p.covc(2, j);
            S vJ[2][3];
            for (int a = 0; a < 2; ++a)
                for (int j = 0; j < 3; ++j) vJ[a][j] = (V[a][0] + V[0][a]) * JS[0][j] + (V[a][1] + V[1][a]) * JS[1][j];
            // means2d and depth
            const S vu = gm2[2 * idx], vv = gm2[2 * idx + 1];
            S vmc[3];
            vmc[0] = fx * rz * vu;
            vmc[1] = fy * rz * vv;
            vmc[2] = -(fx * p.mc[0] * vu + fy * p.mc[1] * vv) * rz2 + gd[idx];
            // Jacobian entries depend on the mean (clamped coordinates are constants).
            vmc[2] += -fx * rz2 * vJ[0][0] - fy * rz2 * vJ[1][1];
            if (!p.clamp_x) {
                vmc[0] += -fx * rz2 * vJ[0][2];
                vmc[2] += S(2) * fx * p.tx * rz3 * vJ[0][2];
            } else {
                vmc[2] += fx * p.tx * rz3 * vJ[0][2];
            }
            if (!p.clamp_y) {
                vmc[1] += -fy * rz2 * vJ[1][2];
                vmc[2] += S(2) * fy * p.ty * rz3 * vJ[1][2];
            } else {
                vmc[2] += fy * p.ty * rz3 * vJ[1][2];
            }
            for (int i = 0; i < 3; ++i) vmean[i] += p.Rv(0, i) * vmc[0] + p.Rv(1, i) * vmc[1] + p.Rv(2, i) * vmc[2];
            // cov world = M M^T, covc = Rv cov Rv^T: v_cov = Rv^T vcov Rv; v_M = (v_cov + v_cov^T) M
            const Mat3<S> vcw = matmul(matmul_at(p.Rv, vcov), p.Rv);
            Mat3<S> sym;
            for (int i = 0; i < 3; ++i)
                for (int j = 0; j < 3; ++j) sym(i, j) = vcw(i, j) + vcw(j, i);
            const Mat3<S> vM = matmul(sym, p.M);
            for (int e = 0; e < 9; ++e) vM_total.m[e] += vM.m[e];
        }
        if (!any) continue;
        for (int i = 0; i < 3; ++i) om[3 * g + i] = static_cast<T>(vmean[i]);
        // Rotation of this Gaussian (recomputed here so nothing depends on the last camera).
        const S q[4] = {pq[4 * g], pq[4 * g + 1], pq[4 * g + 2], pq[4 * g + 3]};
        const S qn = std::sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]);
        const S iq = S(1) / std::max(qn, S(1e-12));
        const S w = q[0] * iq, x = q[1] * iq, y = q[2] * iq, z = q[3] * iq;
        const Mat3<S> Rq = quat_rot(w, x, y, z);
        // M = Rq diag(s)
        Mat3<S> vR;
        for (int i = 0; i < 3; ++i)
            for (int j = 0; j < 3; ++j) vR(i, j) = vM_total(i, j) * ps[3 * g + j];
        for (int j = 0; j < 3; ++j)
            os[3 * g + j] = static_cast<T>(vM_total(0, j) * Rq(0, j) + vM_total(1, j) * Rq(1, j) + vM_total(2, j) * Rq(2, j));
        const S vw = 2 * (-z * vR(0, 1) + y * vR(0, 2) + z * vR(1, 0) - x * vR(1, 2) - y * vR(2, 0) + x * vR(2, 1));
        const S vx = 2 * (y * vR(0, 1) + z * vR(0, 2) + y * vR(1, 0) - 2 * x * vR(1, 1) - w * vR(1, 2) + z * vR(2, 0) +
                          w * vR(2, 1) - 2 * x * vR(2, 2));
        const S vy = 2 * (-2 * y * vR(0, 0) + x * vR(0, 1) + w * vR(0, 2) + x * vR(1, 0) + z * vR(1, 2) - w * vR(2, 0) +
                          z * vR(2, 1) - 2 * y * vR(2, 2));
        const S vz = 2 * (-2 * z * vR(0, 0) - w * vR(0, 1) + x * vR(0, 2) + w * vR(1, 0) - 2 * z * vR(1, 1) +
                          y * vR(1, 2) + x * vR(2, 0) + y * vR(2, 1));
        // through q / |q|
        const S dot = vw * w + vx * x + vy * y + vz * z;
        oq[4 * g] = static_cast<T>((vw - dot * w) * iq);
        oq[4 * g + 1] = static_cast<T>((vx - dot * x) * iq);
        oq[4 * g + 2] = static_cast<T>((vy - dot * y) * iq);
        oq[4 * g + 3] = static_cast<T>((vz - dot * z) * iq);
    }
    return {v_means, v_quats, v_scales};
}

std::vector<at::Tensor> project_backward(const at::Tensor &means, const at::Tensor &quats,
                                         const at::Tensor &scales, const at::Tensor &opac,
                                         const at::Tensor &viewmats, const at::Tensor &Ks, int64_t W,
                                         int64_t H, double eps2d, double near_plane, double far_plane,
                                         const at::Tensor &radii, const at::Tensor &v_means2d,
                                         const at::Tensor &v_depths, const at::Tensor &v_conics, int64_t threads) {
    check_proj_inputs(means, quats, scales, opac, viewmats, Ks);
    const int64_t N = means.size(0), C = viewmats.size(0);
    TORCH_CHECK(radii.device().is_cpu() && radii.is_contiguous() && radii.scalar_type() == at::kInt &&
                    radii.numel() == C * N * 2,
                "radii must be the forward's contiguous int32 [C, N, 2] tensor");
    for (auto *t : {&v_means2d, &v_depths, &v_conics}) {
        TORCH_CHECK(t->device().is_cpu() && t->is_contiguous() && t->scalar_type() == means.scalar_type(),
                    "projection gradients must be contiguous CPU tensors of the inputs' dtype");
    }
    TORCH_CHECK(v_means2d.numel() == C * N * 2 && v_depths.numel() == C * N && v_conics.numel() == C * N * 3,
                "projection gradients have the wrong size");
    if (means.scalar_type() == at::kDouble)
        return project_backward_impl<double>(means, quats, scales, opac, viewmats, Ks, W, H, eps2d, near_plane,
                                             far_plane, radii, v_means2d, v_depths, v_conics, threads);
    return project_backward_impl<float>(means, quats, scales, opac, viewmats, Ks, W, H, eps2d, near_plane,
                                        far_plane, radii, v_means2d, v_depths, v_conics, threads);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(zero1toa_cpu, m) {
    m.def("project_forward", &project_forward);
    m.def("project_backward", &project_backward);
}
