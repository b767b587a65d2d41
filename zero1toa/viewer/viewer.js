// zero1toa avatar viewer: poses the package's head and Gaussians per frame and splats them in WebGL2.
//
// Why the maths is on the CPU: posing (blendshapes + LBS + triangle frames), the EWA projection
// and the depth sort are the same few loops as zero1toa's Python code (avatar/gaussians.py,
// head/lbs.py, render/cpu_rasterizer.py), so the page reproduces its images; the GPU only
// evaluates and blends each Gaussian's screen-space footprint (3DGS semantics: pixel centres at
// +0.5, alpha = min(0.999, o exp(-sigma)), fragments below 1/255 dropped, back-to-front "over"
// onto the background, which equals the Python compositor's front-to-back sum).
(function () {
  "use strict";
  const EXT = "ZERO1TOA_gaussian_avatar";
  const ALPHA_MIN = 1 / 255, RADIUS_SIGMAS = 3.33;
  const POSE_COLUMNS = {
    rotation_x: 0, rotation_y: 1, rotation_z: 2, neck_x: 3, neck_y: 4, neck_z: 5, jaw_x: 6, jaw_y: 7, jaw_z: 8,
    eye_left_x: 9, eye_left_y: 10, eye_left_z: 11, eye_right_x: 12, eye_right_y: 13, eye_right_z: 14,
    translation_x: 15, translation_y: 16, translation_z: 17,
  };

  // ------------------------------------------------------------------ package decoding
  const HALF = (function () { // float16 -> float32 table (65536 entries)
    const t = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) {
      const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, m = h & 0x3ff;
      t[h] = e === 0 ? s * m * Math.pow(2, -24) : e === 31 ? (m ? NaN : s * Infinity) : s * (1 + m / 1024) * Math.pow(2, e - 15);
    }
    return t;
  })();

  function base64Bytes(text) {
    const bin = atob(text.replace(/\s+/g, ""));
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  function parsePackage(u8) {
    const dv = new DataView(u8.buffer, u8.byteOffset, u8.byteLength);
    if (dv.getUint32(0, true) !== 0x46546c67 || dv.getUint32(4, true) !== 2) throw new Error("not a glTF 2.0 binary");
    const jlen = dv.getUint32(12, true);
    const gltf = JSON.parse(new TextDecoder().decode(u8.subarray(20, 20 + jlen)));
    const off = 20 + jlen, blen = dv.getUint32(off, true);
    const bin = u8.subarray(off + 8, off + 8 + blen);
    const ext = gltf.extensions && gltf.extensions[EXT];
    if (!ext) throw new Error("this .glb has no " + EXT + " block");
    const arrays = {};
    for (const name in ext.arrays) {
      const spec = ext.arrays[name], view = gltf.bufferViews[spec.bufferView];
      const bytes = bin.slice(view.byteOffset, view.byteOffset + view.byteLength).buffer;
      let data;
      if (spec.dtype === "float32") data = new Float32Array(bytes);
      else if (spec.dtype === "uint32") data = new Uint32Array(bytes);
      else if (spec.dtype === "int32") data = new Int32Array(bytes);
      else if (spec.dtype === "uint16") data = new Uint16Array(bytes);
      else if (spec.dtype === "float16") { const h = new Uint16Array(bytes); data = new Float32Array(h.length); for (let i = 0; i < h.length; i++) data[i] = HALF[h[i]]; }
      else throw new Error("unknown dtype " + spec.dtype);
      arrays[name] = { data: data, shape: spec.shape };
    }
    return { meta: ext, arrays: arrays };
  }

  // ------------------------------------------------------------------ small matrix helpers
  const { rodrigues, matToAxisAngle, mul3 } = window.zero1toaRotations; // rotations.js
  function eulerToAxisAngle(yaw, pitch, roll) { // degrees; R = Ry(yaw) Rx(pitch) Rz(roll)
    const r = Math.PI / 180, a = [0, 0, 0, 0, 0, 0, 0, 0, 0], b = a.slice(), c = a.slice();
    rodrigues(0, yaw * r, 0, a, 0); rodrigues(pitch * r, 0, 0, b, 0); rodrigues(0, 0, roll * r, c, 0);
    return matToAxisAngle(mul3(mul3(a, b), c));
  }

  // ------------------------------------------------------------------ the avatar
  function Avatar(pkg) {
    const A = pkg.arrays, m = pkg.meta;
    this.meta = m;
    this.V = A.template.shape[0]; this.F = A.faces.shape[0]; this.E = A.expr_dirs.shape[0];
    this.J = A.joints.shape[0]; this.N = A.gaussian_face.shape[0];
    this.template = A.template.data; this.faces = A.faces.data; this.exprDirs = A.expr_dirs.data;
    this.joints = A.joints.data; this.parents = Array.from(A.parents.data); this.weights = A.skin_weights.data;
    this.exprJaw = A.expression_jaw.data;
    this.jointExprDirs = A.joint_expr_dirs ? A.joint_expr_dirs.data : null;
    this.poseDirs = A.pose_dirs ? A.pose_dirs.data : null;
    this.face = A.gaussian_face.data; this.offset = A.gaussian_offset.data;
    const N = this.N;
    this.scaleLocal = new Float32Array(N * 3);
    for (let i = 0; i < N * 3; i++) this.scaleLocal[i] = Math.exp(A.gaussian_log_scale.data[i]);
    this.rotLocal = new Float32Array(N * 9);
    const q = A.gaussian_rotation.data;
    for (let n = 0; n < N; n++) {
      let w = q[n * 4], x = q[n * 4 + 1], y = q[n * 4 + 2], z = q[n * 4 + 3];
      const l = Math.max(Math.hypot(w, x, y, z), 1e-12); w /= l; x /= l; y /= l; z /= l;
      const R = this.rotLocal, o = n * 9;
      R[o] = 1 - 2 * (y * y + z * z); R[o + 1] = 2 * (x * y - w * z); R[o + 2] = 2 * (x * z + w * y);
      R[o + 3] = 2 * (x * y + w * z); R[o + 4] = 1 - 2 * (x * x + z * z); R[o + 5] = 2 * (y * z - w * x);
      R[o + 6] = 2 * (x * z - w * y); R[o + 7] = 2 * (y * z + w * x); R[o + 8] = 1 - 2 * (x * x + y * y);
    }
    this.opacity = new Float32Array(N);
    for (let n = 0; n < N; n++) this.opacity[n] = 1 / (1 + Math.exp(-A.gaussian_opacity_logit.data[n]));
    this.shDegree = m.sh_degree; this.K = A.gaussian_sh.shape[1]; this.sh = A.gaussian_sh.data;
    this.verts = new Float64Array(this.V * 3); this.posed = new Float64Array(this.V * 3);
    this.means = new Float64Array(N * 3); this.cov = new Float64Array(N * 6);
    this.arkit = m.arkit ? { meta: m.arkit, expression: A[m.arkit.arrays.expression].data, jaw: A[m.arkit.arrays.jaw].data, eyes: A[m.arkit.arrays.eyes].data } : null;
    this.drives = {};
    for (const d of m.drive_presets) {
      this.drives[d.name] = { expression: A["drive_" + d.name + "_expression"].data, pose: A["drive_" + d.name + "_pose"].data,
        yaw: A["drive_" + d.name + "_yaw_deg"].data, frames: d.frames, fps: d.fps };
    }
  }

  // Head vertices for (expression [E], pose [18]): blendshapes, pose correctives, LBS, translation.
  Avatar.prototype.poseVertices = function (expr, pose) {
    const V = this.V, E = this.E, J = this.J, v = this.verts;
    v.set(this.template);
    for (let e = 0; e < E; e++) {
      const w = expr[e]; if (w === 0) continue;
      const d = this.exprDirs, o = e * V * 3;
      for (let i = 0; i < V * 3; i++) v[i] += w * d[o + i];
    }
    const jts = new Float64Array(this.joints);
    if (this.jointExprDirs) for (let e = 0; e < E; e++) for (let i = 0; i < J * 3; i++) jts[i] += expr[e] * this.jointExprDirs[e * J * 3 + i];
    const aa = [pose[0], pose[1], pose[2], pose[3], pose[4], pose[5], pose[6], pose[7], pose[8], pose[9], pose[10], pose[11], pose[12], pose[13], pose[14]];
    for (let e = 0; e < E; e++) for (let k = 0; k < 3; k++) aa[6 + k] += expr[e] * this.exprJaw[e * 3 + k];
    const R = new Float64Array(J * 9);
    for (let j = 0; j < J; j++) rodrigues(aa[j * 3], aa[j * 3 + 1], aa[j * 3 + 2], R, j * 9);
    if (this.poseDirs) {
      const P = (J - 1) * 9, pd = this.poseDirs;
      for (let p = 0; p < P; p++) {
        const j = 1 + Math.floor(p / 9), rc = p % 9;
        const f = R[j * 9 + rc] - (rc === 0 || rc === 4 || rc === 8 ? 1 : 0);
        if (f === 0) continue;
        const o = p * V * 3;
        for (let i = 0; i < V * 3; i++) v[i] += f * pd[o + i];
      }
    }
    // forward kinematics: world[j] = world[parent] * [R_j | joint_j - joint_parent]; 3x4 row-major
    const W = new Float64Array(J * 12), T = new Float64Array(J * 12);
    for (let j = 0; j < J; j++) {
      const p = this.parents[j], L = new Float64Array(12);
      for (let r = 0; r < 3; r++) {
        for (let c = 0; c < 3; c++) L[r * 4 + c] = R[j * 9 + r * 3 + c];
        L[r * 4 + 3] = jts[j * 3 + r] - (p >= 0 ? jts[p * 3 + r] : 0);
      }
      if (p < 0) W.set(L, j * 12);
      else for (let r = 0; r < 3; r++) {
        for (let c = 0; c < 4; c++) {
          let s = 0; for (let k = 0; k < 3; k++) s += W[p * 12 + r * 4 + k] * L[k * 4 + c];
          W[j * 12 + r * 4 + c] = s + (c === 3 ? W[p * 12 + r * 4 + 3] : 0);
        }
      }
      for (let r = 0; r < 3; r++) { // remove the rest-pose joint: the transform applies to rest points
        for (let c = 0; c < 3; c++) T[j * 12 + r * 4 + c] = W[j * 12 + r * 4 + c];
        T[j * 12 + r * 4 + 3] = W[j * 12 + r * 4 + 3] - (W[j * 12 + r * 4] * jts[j * 3] + W[j * 12 + r * 4 + 1] * jts[j * 3 + 1] + W[j * 12 + r * 4 + 2] * jts[j * 3 + 2]);
      }
    }
    const out = this.posed, wts = this.weights, M = new Float64Array(12);
    for (let i = 0; i < V; i++) {
      M.fill(0);
      for (let j = 0; j < J; j++) { const w = wts[i * J + j]; if (w !== 0) for (let k = 0; k < 12; k++) M[k] += w * T[j * 12 + k]; }
      const x = v[i * 3], y = v[i * 3 + 1], z = v[i * 3 + 2];
      out[i * 3] = M[0] * x + M[1] * y + M[2] * z + M[3] + pose[15];
      out[i * 3 + 1] = M[4] * x + M[5] * y + M[6] * z + M[7] + pose[16];
      out[i * 3 + 2] = M[8] * x + M[9] * y + M[10] * z + M[11] + pose[17];
    }
    return out;
  };

  // World means [N, 3] and covariances [N, 6] (xx xy xz yy yz zz) on the posed triangles.
  Avatar.prototype.poseGaussians = function (expr, pose) {
    const P = this.poseVertices(expr, pose), f = this.faces, N = this.N;
    const F = this.F, fr = new Float64Array(F * 13); // centroid 3, R 9 (row-major; columns = x, y, n), k
    for (let t = 0; t < F; t++) {
      const a = f[t * 3] * 3, b = f[t * 3 + 1] * 3, c = f[t * 3 + 2] * 3;
      const e0x = P[b] - P[a], e0y = P[b + 1] - P[a + 1], e0z = P[b + 2] - P[a + 2];
      const e1x = P[c] - P[a], e1y = P[c + 1] - P[a + 1], e1z = P[c + 2] - P[a + 2];
      let nx = e0y * e1z - e0z * e1y, ny = e0z * e1x - e0x * e1z, nz = e0x * e1y - e0y * e1x;
      const dbl = Math.hypot(nx, ny, nz), dn = Math.max(dbl, 1e-12); nx /= dn; ny /= dn; nz /= dn;
      const el = Math.max(Math.hypot(e0x, e0y, e0z), 1e-12), xx = e0x / el, xy = e0y / el, xz = e0z / el;
      const yx = ny * xz - nz * xy, yy = nz * xx - nx * xz, yz = nx * xy - ny * xx;
      const o = t * 13;
      fr[o] = (P[a] + P[b] + P[c]) / 3; fr[o + 1] = (P[a + 1] + P[b + 1] + P[c + 1]) / 3; fr[o + 2] = (P[a + 2] + P[b + 2] + P[c + 2]) / 3;
      fr[o + 3] = xx; fr[o + 4] = yx; fr[o + 5] = nx; fr[o + 6] = xy; fr[o + 7] = yy; fr[o + 8] = ny; fr[o + 9] = xz; fr[o + 10] = yz; fr[o + 11] = nz;
      fr[o + 12] = Math.sqrt(Math.max(dbl, 1e-12));
    }
    const means = this.means, cov = this.cov, off = this.offset, sl = this.scaleLocal, RL = this.rotLocal;
    for (let n = 0; n < N; n++) {
      const o = this.face[n] * 13, k = fr[o + 12];
      const lx = off[n * 3] * k, ly = off[n * 3 + 1] * k, lz = off[n * 3 + 2] * k;
      for (let r = 0; r < 3; r++) means[n * 3 + r] = fr[o + r] + fr[o + 3 + r * 3] * lx + fr[o + 4 + r * 3] * ly + fr[o + 5 + r * 3] * lz;
      // M = R_tri R_local diag(s k); covariance = M M^T
      const s0 = sl[n * 3] * k, s1 = sl[n * 3 + 1] * k, s2 = sl[n * 3 + 2] * k, M = [0, 0, 0, 0, 0, 0, 0, 0, 0];
      for (let r = 0; r < 3; r++) for (let c = 0; c < 3; c++) {
        const rw = fr[o + 3 + r * 3] * RL[n * 9 + c] + fr[o + 4 + r * 3] * RL[n * 9 + 3 + c] + fr[o + 5 + r * 3] * RL[n * 9 + 6 + c];
        M[r * 3 + c] = rw * (c === 0 ? s0 : c === 1 ? s1 : s2);
      }
      cov[n * 6] = M[0] * M[0] + M[1] * M[1] + M[2] * M[2];
      cov[n * 6 + 1] = M[0] * M[3] + M[1] * M[4] + M[2] * M[5];
      cov[n * 6 + 2] = M[0] * M[6] + M[1] * M[7] + M[2] * M[8];
      cov[n * 6 + 3] = M[3] * M[3] + M[4] * M[4] + M[5] * M[5];
      cov[n * 6 + 4] = M[3] * M[6] + M[4] * M[7] + M[5] * M[8];
      cov[n * 6 + 5] = M[6] * M[6] + M[7] * M[7] + M[8] * M[8];
    }
  };

  // ------------------------------------------------------------------ SH colour (3DGS basis)
  const C0 = 0.28209479177387814, C1 = 0.4886025119029199;
  const C2 = [1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396];
  const C3 = [-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154, -0.4570457994644658, 1.445305721320277, -0.5900435899266435];
  function shBasis(deg, x, y, z, out) {
    out[0] = C0;
    if (deg < 1) return;
    out[1] = -C1 * y; out[2] = C1 * z; out[3] = -C1 * x;
    if (deg < 2) return;
    const xx = x * x, yy = y * y, zz = z * z;
    out[4] = C2[0] * x * y; out[5] = C2[1] * y * z; out[6] = C2[2] * (2 * zz - xx - yy); out[7] = C2[3] * x * z; out[8] = C2[4] * (xx - yy);
    if (deg < 3) return;
    out[9] = C3[0] * y * (3 * xx - yy); out[10] = C3[1] * x * y * z; out[11] = C3[2] * y * (4 * zz - xx - yy);
    out[12] = C3[3] * z * (2 * zz - 3 * xx - 3 * yy); out[13] = C3[4] * x * (4 * zz - xx - yy); out[14] = C3[5] * z * (xx - yy); out[15] = C3[6] * x * (xx - 3 * yy);
  }

  // ------------------------------------------------------------------ WebGL2 splatting
  const VS = `#version 300 es
precision highp float;
layout(location=0) in vec2 corner;
layout(location=1) in vec4 a_mean_rad;   // centre px (x, y), box half size (rx, ry)
layout(location=2) in vec4 a_conic_op;   // conic (a, b, c), opacity
layout(location=3) in vec3 a_color;
uniform vec2 u_size;
out vec2 v_mean; out vec4 v_conic_op; out vec3 v_color;
void main() {
  vec2 px = a_mean_rad.xy + corner * a_mean_rad.zw;
  gl_Position = vec4(px.x / u_size.x * 2.0 - 1.0, 1.0 - px.y / u_size.y * 2.0, 0.0, 1.0);
  v_mean = a_mean_rad.xy; v_conic_op = a_conic_op; v_color = a_color;
}`;
  const FS = `#version 300 es
precision highp float;
in vec2 v_mean; in vec4 v_conic_op; in vec3 v_color;
uniform vec2 u_size;
out vec4 frag;
void main() {
  vec2 p = vec2(gl_FragCoord.x, u_size.y - gl_FragCoord.y);  // pixel centre, y down (OpenCV)
  vec2 d = v_mean - p;
  float sigma = 0.5 * (v_conic_op.x * d.x * d.x + v_conic_op.z * d.y * d.y) + v_conic_op.y * d.x * d.y;
  if (sigma < 0.0) discard;
  float a = min(0.999, v_conic_op.w * exp(-sigma));
  if (a < 1.0 / 255.0) discard;
  frag = vec4(v_color * a, a);
}`;
  const BLIT_VS = `#version 300 es
void main() { vec2 p = vec2(float((gl_VertexID << 1) & 2), float(gl_VertexID & 2)); gl_Position = vec4(p * 2.0 - 1.0, 0.0, 1.0); }`;
  const BLIT_FS = `#version 300 es
precision highp float;
uniform highp sampler2D u_tex;
out vec4 frag;
void main() { vec4 c = texelFetch(u_tex, ivec2(gl_FragCoord.xy), 0); frag = vec4(clamp(c.rgb, 0.0, 1.0), 1.0); }`;

  function compile(gl, vs, fs) {
    const prog = gl.createProgram();
    for (const [type, src] of [[gl.VERTEX_SHADER, vs], [gl.FRAGMENT_SHADER, fs]]) {
      const sh = gl.createShader(type);
      gl.shaderSource(sh, src); gl.compileShader(sh);
      if (!gl.getShaderParameter(sh, gl.COMPILE_STATUS)) throw new Error("shader: " + gl.getShaderInfoLog(sh));
      gl.attachShader(prog, sh);
    }
    gl.linkProgram(prog);
    if (!gl.getProgramParameter(prog, gl.LINK_STATUS)) throw new Error("link: " + gl.getProgramInfoLog(prog));
    return prog;
  }

  function Splatter(canvas, avatar) {
    const gl = canvas.getContext("webgl2", { antialias: false, alpha: false, depth: false, premultipliedAlpha: false, preserveDrawingBuffer: true });
    if (!gl) throw new Error("this browser has no WebGL2");
    this.gl = gl; this.avatar = avatar; this.canvas = canvas;
    this.prog = compile(gl, VS, FS); this.blit = compile(gl, BLIT_VS, BLIT_FS);
    this.vao = gl.createVertexArray(); gl.bindVertexArray(this.vao);
    const quad = gl.createBuffer(); gl.bindBuffer(gl.ARRAY_BUFFER, quad);
    gl.bufferData(gl.ARRAY_BUFFER, new Float32Array([-1, -1, 1, -1, -1, 1, 1, 1]), gl.STATIC_DRAW);
    gl.enableVertexAttribArray(0); gl.vertexAttribPointer(0, 2, gl.FLOAT, false, 0, 0);
    this.inst = gl.createBuffer(); gl.bindBuffer(gl.ARRAY_BUFFER, this.inst);
    const stride = 11 * 4;
    for (const [loc, size, off] of [[1, 4, 0], [2, 4, 16], [3, 3, 32]]) {
      gl.enableVertexAttribArray(loc); gl.vertexAttribPointer(loc, size, gl.FLOAT, false, stride, off); gl.vertexAttribDivisor(loc, 1);
    }
    gl.bindVertexArray(null);
    this.instData = new Float32Array(avatar.N * 11);
    // A float target keeps hundreds of blended layers from rounding at 8 bits per step.
    this.floatTarget = !!gl.getExtension("EXT_color_buffer_float");
    this.floatBlend = !!gl.getExtension("EXT_float_blend");
    this.targetFormat = this.floatTarget ? (this.floatBlend ? "RGBA32F" : "RGBA16F") : "RGBA8 (canvas)";
    this.fbo = null; this.fboSize = [0, 0];
  }

  Splatter.prototype.ensureTarget = function (w, h) {
    const gl = this.gl;
    if (!this.floatTarget || (this.fboSize[0] === w && this.fboSize[1] === h)) return;
    if (this.fbo) { gl.deleteFramebuffer(this.fbo); gl.deleteTexture(this.tex); }
    this.tex = gl.createTexture(); gl.bindTexture(gl.TEXTURE_2D, this.tex);
    gl.texStorage2D(gl.TEXTURE_2D, 1, this.floatBlend ? gl.RGBA32F : gl.RGBA16F, w, h);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.NEAREST); gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MAG_FILTER, gl.NEAREST);
    this.fbo = gl.createFramebuffer(); gl.bindFramebuffer(gl.FRAMEBUFFER, this.fbo);
    gl.framebufferTexture2D(gl.FRAMEBUFFER, gl.COLOR_ATTACHMENT0, gl.TEXTURE_2D, this.tex, 0);
    if (gl.checkFramebufferStatus(gl.FRAMEBUFFER) !== gl.FRAMEBUFFER_COMPLETE) { this.floatTarget = false; this.targetFormat = "RGBA8 (canvas)"; }
    gl.bindFramebuffer(gl.FRAMEBUFFER, null);
    this.fboSize = [w, h];
  };

  // Project (EWA + 0.3 px dilation + opacity-aware box, as render/cpu_rasterizer.py), sort, draw.
  Splatter.prototype.draw = function (cam, bg, eps2d, near) {
    const av = this.avatar, N = av.N, means = av.means, cov = av.cov, Wd = cam.width, Ht = cam.height;
    const V = cam.viewmat, K = cam.K, t0 = performance.now();
    const fx = K[0][0], fy = K[1][1], cx = K[0][2], cy = K[1][2];
    const tanx = 0.5 * Wd / fx, tany = 0.5 * Ht / fy;
    const limxp = (Wd - cx) / fx + 0.3 * tanx, limxn = cx / fx + 0.3 * tanx, limyp = (Ht - cy) / fy + 0.3 * tany, limyn = cy / fy + 0.3 * tany;
    const R = [V[0][0], V[0][1], V[0][2], V[1][0], V[1][1], V[1][2], V[2][0], V[2][1], V[2][2]], t = [V[0][3], V[1][3], V[2][3]];
    const campos = [-(R[0] * t[0] + R[3] * t[1] + R[6] * t[2]), -(R[1] * t[0] + R[4] * t[1] + R[7] * t[2]), -(R[2] * t[0] + R[5] * t[1] + R[8] * t[2])];
    if (!this.depth || this.depth.length !== N) { this.depth = new Float64Array(N); this.order = new Uint32Array(N); this.proj = new Float64Array(N * 10); }
    const depth = this.depth, proj = this.proj, basis = new Float64Array(16), Kc = av.K, deg = av.shDegree, sh = av.sh;
    let count = 0;
    for (let n = 0; n < N; n++) {
      const mx = means[n * 3], my = means[n * 3 + 1], mz = means[n * 3 + 2];
      const x = R[0] * mx + R[1] * my + R[2] * mz + t[0], y = R[3] * mx + R[4] * my + R[5] * mz + t[1], z = R[6] * mx + R[7] * my + R[8] * mz + t[2];
      if (z < near) continue;
      const op = av.opacity[n];
      if (op < ALPHA_MIN) continue;
      // camera-space covariance R S R^T
      const c = cov, o = n * 6;
      const S = [c[o], c[o + 1], c[o + 2], c[o + 1], c[o + 3], c[o + 4], c[o + 2], c[o + 4], c[o + 5]];
      const RS = mul3(R, S), Cc = [0, 0, 0, 0, 0, 0, 0, 0, 0];
      for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) Cc[i * 3 + j] = RS[i * 3] * R[j * 3] + RS[i * 3 + 1] * R[j * 3 + 1] + RS[i * 3 + 2] * R[j * 3 + 2];
      const tx = z * Math.min(Math.max(x / z, -limxn), limxp), ty = z * Math.min(Math.max(y / z, -limyn), limyp), rz = 1 / z;
      const j00 = fx * rz, j02 = -fx * tx * rz * rz, j11 = fy * rz, j12 = -fy * ty * rz * rz;
      const s00 = Cc[0], s01 = Cc[1], s02 = Cc[2], s11 = Cc[4], s12 = Cc[5], s22 = Cc[8];
      const c00 = j00 * j00 * s00 + 2 * j00 * j02 * s02 + j02 * j02 * s22 + eps2d;
      const c01 = j00 * j11 * s01 + j00 * j12 * s02 + j02 * j11 * s12 + j02 * j12 * s22;
      const c11 = j11 * j11 * s11 + 2 * j11 * j12 * s12 + j12 * j12 * s22 + eps2d;
      const det = c00 * c11 - c01 * c01;
      if (!(det > 0)) continue;
      const u = fx * x * rz + cx, v = fy * y * rz + cy;
      const ext = Math.min(Math.sqrt(2 * Math.log(op / ALPHA_MIN)), RADIUS_SIGMAS);
      const rx = Math.ceil(ext * Math.sqrt(Math.max(c00, 0))), ry = Math.ceil(ext * Math.sqrt(Math.max(c11, 0)));
      if (!(rx > 0 || ry > 0) || u + rx <= 0 || u - rx >= Wd || v + ry <= 0 || v - ry >= Ht) continue;
      // colour: SH along the direction from the camera centre to the mean, + 0.5, clamped at 0
      let dx = mx - campos[0], dy = my - campos[1], dz = mz - campos[2];
      const dl = Math.max(Math.hypot(dx, dy, dz), 1e-12); dx /= dl; dy /= dl; dz /= dl;
      shBasis(deg, dx, dy, dz, basis);
      const nb = (deg + 1) * (deg + 1), col = [0.5, 0.5, 0.5];
      for (let b = 0; b < nb; b++) for (let ch = 0; ch < 3; ch++) col[ch] += basis[b] * sh[(n * Kc + b) * 3 + ch];
      const p = count * 10;
      proj[p] = u; proj[p + 1] = v; proj[p + 2] = rx; proj[p + 3] = ry;
      proj[p + 4] = c11 / det; proj[p + 5] = -c01 / det; proj[p + 6] = c00 / det; proj[p + 7] = op;
      proj[p + 8] = n; proj[p + 9] = 0;
      this.cols = this.cols || new Float64Array(N * 3);
      this.cols[count * 3] = Math.max(col[0], 0); this.cols[count * 3 + 1] = Math.max(col[1], 0); this.cols[count * 3 + 2] = Math.max(col[2], 0);
      depth[count] = z; this.order[count] = count; count++;
    }
    const t1 = performance.now();
    // back to front; ties: the later Gaussian first (front-to-back order is by depth, then index)
    const ord = this.order.subarray(0, count);
    ord.sort(function (a, b) { return depth[b] - depth[a] || proj[b * 10 + 8] - proj[a * 10 + 8]; });
    const inst = this.instData;
    for (let i = 0; i < count; i++) {
      const s = ord[i], p = s * 10, q = i * 11;
      inst[q] = proj[p]; inst[q + 1] = proj[p + 1]; inst[q + 2] = proj[p + 2]; inst[q + 3] = proj[p + 3];
      inst[q + 4] = proj[p + 4]; inst[q + 5] = proj[p + 5]; inst[q + 6] = proj[p + 6]; inst[q + 7] = proj[p + 7];
      inst[q + 8] = this.cols[s * 3]; inst[q + 9] = this.cols[s * 3 + 1]; inst[q + 10] = this.cols[s * 3 + 2];
    }
    const t2 = performance.now();
    const gl = this.gl;
    if (this.canvas.width !== Wd || this.canvas.height !== Ht) { this.canvas.width = Wd; this.canvas.height = Ht; }
    this.ensureTarget(Wd, Ht);
    gl.bindFramebuffer(gl.FRAMEBUFFER, this.floatTarget ? this.fbo : null);
    gl.viewport(0, 0, Wd, Ht);
    gl.clearColor(bg, bg, bg, 0); gl.clear(gl.COLOR_BUFFER_BIT);
    gl.enable(gl.BLEND); gl.blendFuncSeparate(gl.ONE, gl.ONE_MINUS_SRC_ALPHA, gl.ONE, gl.ONE_MINUS_SRC_ALPHA);
    gl.useProgram(this.prog);
    gl.uniform2f(gl.getUniformLocation(this.prog, "u_size"), Wd, Ht);
    gl.bindVertexArray(this.vao);
    gl.bindBuffer(gl.ARRAY_BUFFER, this.inst);
    gl.bufferData(gl.ARRAY_BUFFER, inst.subarray(0, count * 11), gl.DYNAMIC_DRAW);
    gl.drawArraysInstanced(gl.TRIANGLE_STRIP, 0, 4, count);
    gl.bindVertexArray(null);
    gl.disable(gl.BLEND);
    if (this.floatTarget) {
      gl.bindFramebuffer(gl.FRAMEBUFFER, null);
      gl.useProgram(this.blit);
      gl.activeTexture(gl.TEXTURE0); gl.bindTexture(gl.TEXTURE_2D, this.tex);
      gl.uniform1i(gl.getUniformLocation(this.blit, "u_tex"), 0);
      gl.drawArrays(gl.TRIANGLES, 0, 3);
    }
    return { visible: count, project_ms: t1 - t0, sort_ms: t2 - t1 };
  };

  // ------------------------------------------------------------------ the viewer (state, camera, UI)
  function Viewer(pkg, canvas) {
    this.pkg = pkg; this.meta = pkg.meta; this.avatar = new Avatar(pkg);
    this.splat = new Splatter(canvas, this.avatar);
    const cam = this.meta.camera, E = this.avatar.E;
    const up = Math.max(1, 512 / Math.max(cam.width, cam.height)); // small reference crops are shown at 512 px
    this.state = { expression: new Array(E).fill(0), pose: new Array(18).fill(0), yaw: 0, elev: 0, zoom: 1,
      width: Math.round(cam.width * up), height: Math.round(cam.height * up), viewmat: null, K: null, background: this.meta.render.background };
    this.renderedFrames = 0; this.ready = false; this.error = null; this.lastStats = null;
    this.frameTimes = []; this.playing = null; this.onchange = null;
  }

  // The camera: an explicit (viewmat, K) when given, else the reference camera orbited about the
  // head's centre line (camera.py orbit_from_reference) and zoomed by scaling the focal length.
  Viewer.prototype.camera = function () {
    const s = this.state, ref = this.meta.camera;
    const sx = s.width / ref.width, sy = s.height / ref.height;
    if (s.viewmat) return { viewmat: s.viewmat, K: s.K, width: s.width, height: s.height };
    const r = Math.PI / 180, Rx = [0, 0, 0, 0, 0, 0, 0, 0, 0], Ry = Rx.slice();
    const yaw = s.yaw + (this.driveYaw || 0);
    rodrigues(s.elev * r, 0, 0, Rx, 0); rodrigues(0, -yaw * r, 0, Ry, 0);
    const Rw = mul3(Rx, Ry), tg = ref.target;
    const tt = [tg[0] - (Rw[0] * tg[0] + Rw[1] * tg[1] + Rw[2] * tg[2]), tg[1] - (Rw[3] * tg[0] + Rw[4] * tg[1] + Rw[5] * tg[2]), tg[2] - (Rw[6] * tg[0] + Rw[7] * tg[1] + Rw[8] * tg[2])];
    const Vr = ref.viewmat, view = [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]];
    for (let i = 0; i < 3; i++) {
      for (let j = 0; j < 3; j++) view[i][j] = Vr[i][0] * Rw[j] + Vr[i][1] * Rw[3 + j] + Vr[i][2] * Rw[6 + j];
      view[i][3] = Vr[i][0] * tt[0] + Vr[i][1] * tt[1] + Vr[i][2] * tt[2] + Vr[i][3];
    }
    const K = ref.K;
    return { viewmat: view, width: s.width, height: s.height,
      K: [[K[0][0] * sx * s.zoom, 0, (K[0][2] - ref.width / 2) * sx + s.width / 2], [0, K[1][1] * sy * s.zoom, (K[1][2] - ref.height / 2) * sy + s.height / 2], [0, 0, 1]] };
  };

  Viewer.prototype.render = function () {
    const t0 = performance.now(), s = this.state;
    this.avatar.poseGaussians(s.expression, s.pose);
    const t1 = performance.now();
    const r = this.meta.render, stats = this.splat.draw(this.camera(), s.background, r.eps2d, r.near);
    stats.pose_ms = t1 - t0; stats.frame_ms = performance.now() - t0;
    this.lastStats = stats; this.renderedFrames++;
    return stats;
  };

  Viewer.prototype.setState = function (update) {
    const s = this.state;
    for (const k in update) {
      if (k === "expression" && !Array.isArray(update[k])) {
        const pe = parseExpression(update[k], this.meta, this.avatar.E);
        s.expression = pe.expression; s.pose[6] = pe.jaw[0]; s.pose[7] = pe.jaw[1]; s.pose[8] = pe.jaw[2];
      }
      else if (k in s) s[k] = update[k];
      else throw new Error("unknown state key " + k);
    }
    if (update.viewmat && !update.width) { s.width = this.meta.camera.width; s.height = this.meta.camera.height; }
    const stats = this.render();
    if (this.onchange) this.onchange();
    return stats;
  };

  // Frames per second of pose + project + sort + splat, synchronised with the GPU each frame.
  Viewer.prototype.benchmark = function (frames, drive) {
    const d = this.avatar.drives[drive || "talk"], gl = this.splat.gl, px = new Uint8Array(4), E = this.avatar.E;
    const saved = { expression: this.state.expression.slice(), pose: this.state.pose.slice() };
    const parts = { pose_ms: 0, project_ms: 0, sort_ms: 0 };
    const t0 = performance.now();
    for (let i = 0; i < frames; i++) {
      const f = i % d.frames;
      this.state.expression = Array.from(d.expression.subarray(f * E, f * E + E));
      this.state.pose = Array.from(d.pose.subarray(f * 18, f * 18 + 18));
      const st = this.render();
      gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, px);
      parts.pose_ms += st.pose_ms; parts.project_ms += st.project_ms; parts.sort_ms += st.sort_ms;
    }
    const ms = (performance.now() - t0) / frames;
    Object.assign(this.state, saved); this.render();
    return { frames: frames, ms_per_frame: ms, fps: 1000 / ms, pose_ms: parts.pose_ms / frames, project_ms: parts.project_ms / frames,
      sort_ms: parts.sort_ms / frames, width: this.state.width, height: this.state.height, gaussians: this.avatar.N,
      target: this.splat.targetFormat, renderer: gl.getParameter(gl.RENDERER) };
  };

  function parseExpression(spec, meta, E) { // "smile", "smile:0.5" or "name=value,name=value"
    const e = new Array(E).fill(0), names = meta.expression_names, jaw = [0, 0, 0];
    if (!spec || spec === "neutral") return { expression: e, jaw: jaw };
    if (spec.indexOf("=") >= 0) {
      for (const item of spec.split(",")) {
        const kv = item.split("="), i = names.indexOf(kv[0].trim());
        if (i < 0) throw new Error("unknown expression coefficient " + kv[0] + "; known: " + names.join(", "));
        e[i] = parseFloat(kv[1]);
      }
      return { expression: e, jaw: jaw };
    }
    const parts = spec.split(":"), mag = parts.length > 1 ? parseFloat(parts[1]) : 1;
    const preset = meta.expression_presets.find(function (p) { return p.name === parts[0]; });
    if (preset) return { expression: preset.expression.map(function (x) { return x * mag; }), jaw: preset.jaw.map(function (x) { return x * mag; }) };
    const i = names.indexOf(parts[0]);
    if (i < 0) throw new Error("unknown expression " + parts[0]);
    e[i] = mag;
    return { expression: e, jaw: jaw };
  }

  // The project's expression CSV (progressive/sequences.py), an ARKit capture (arkit.js), or another
  // schema through csv_mappings.
  function parseCSV(text, meta, E, avatar, angles) {
    text = text.replace(/^\ufeff/, "");
    if (avatar && avatar.arkit) {
      const K = window.zero1toaArkit, rows = K.csvRows(text), first = rows.find(function (r) { return r.some(function (c) { return c.trim().length; }); });
      if (first && K.isArkitHeader(first.map(function (c) { return c.trim(); }), avatar.arkit.meta)) return K.parseArkit(rows, avatar.arkit, avatar.E, angles || avatar.arkit.meta.rotation.units);
    }
    const lines = text.split(/\r?\n/).filter(function (l) { return l.trim().length; });
    if (lines.length < 2) throw new Error("the CSV has no frames (a header line and one row per frame)");
    const cols = lines[0].split(",").map(function (c) { return c.trim().replace(/^"|"$/g, ""); });
    const names = meta.expression_names, maps = meta.csv_mappings || [];
    const T = lines.length - 1, expr = new Float64Array(T * E), pose = new Float64Array(T * 18), unknown = [];
    let timeCol = -1;
    const plan = cols.map(function (c, ci) {
      if (c === "frame") return null;
      if (c === "time") { timeCol = ci; return null; }
      let i = names.indexOf(c);
      if (i < 0 && /^expr_\d+$/.test(c) && +c.slice(5) < E) i = +c.slice(5);
      if (i >= 0) return { kind: "e", i: i };
      if (c in POSE_COLUMNS) return { kind: "p", i: POSE_COLUMNS[c] };
      for (const m of maps) { const k = m.columns.indexOf(c); if (k >= 0) return { kind: "m", e: m.expression[k], jaw: m.jaw ? m.jaw[k] : null }; }
      unknown.push(c); return null;
    });
    if (unknown.length) throw new Error("unknown CSV columns " + unknown.join(", ") + "; expression columns are " + names.join(", ") + ", pose columns " + Object.keys(POSE_COLUMNS).join(", "));
    const times = [];
    for (let t = 0; t < T; t++) {
      const row = lines[t + 1].split(",").map(Number);
      if (timeCol >= 0) times.push(row[timeCol]);
      plan.forEach(function (p, ci) {
        if (!p) return;
        const v = row[ci];
        if (!isFinite(v)) throw new Error("row " + (t + 1) + ", column " + cols[ci] + ": not a number");
        if (p.kind === "e") expr[t * E + p.i] = v;
        else if (p.kind === "p") pose[t * 18 + p.i] = v;
        else { for (let e = 0; e < E; e++) expr[t * E + e] += v * p.e[e]; if (p.jaw) for (let k = 0; k < 3; k++) pose[t * 18 + 6 + k] += v * p.jaw[k]; }
      });
    }
    const fps = times.length > 1 && times[T - 1] > times[0] ? (T - 1) / (times[T - 1] - times[0]) : 24;
    return { expression: expr, pose: pose, yaw: new Float32Array(T), frames: T, fps: fps };
  }

  // ------------------------------------------------------------------ page wiring
  function hashParams() {
    const out = {}, text = (location.hash || "").replace(/^#/, "") || (location.search || "").replace(/^\?/, "");
    for (const kv of text.split("&")) { if (!kv) continue; const i = kv.indexOf("="); out[decodeURIComponent(i < 0 ? kv : kv.slice(0, i))] = i < 0 ? "1" : decodeURIComponent(kv.slice(i + 1)); }
    return out;
  }

  function el(tag, attrs, parent) { const e = document.createElement(tag); for (const k in attrs || {}) e.setAttribute(k, attrs[k]); if (parent) parent.appendChild(e); return e; }

  function buildUI(viewer) {
    const meta = viewer.meta, s = viewer.state, panel = document.getElementById("panel"), status = document.getElementById("status");
    const sliders = [];
    function slider(parent, label, min, max, step, get, set) {
      const row = el("label", { class: "row" }, parent); el("span", { class: "lbl" }, row).textContent = label;
      const input = el("input", { type: "range", min: min, max: max, step: step }, row);
      const out = el("span", { class: "val" }, row);
      const sync = function () { const v = get(); input.value = v; out.textContent = (+v).toFixed(2); };
      input.addEventListener("input", function () { set(parseFloat(input.value)); out.textContent = (+input.value).toFixed(2); stopDrive(); viewer.dirty = true; });
      sliders.push(sync); sync();
    }
    const head = { yaw: 0, pitch: 0, roll: 0 };
    function applyHead() { const aa = eulerToAxisAngle(head.yaw, head.pitch, head.roll); s.pose[3] = aa[0]; s.pose[4] = aa[1]; s.pose[5] = aa[2]; }
    el("h2", {}, panel).textContent = "Expression";
    const presets = el("div", { class: "buttons" }, panel);
    for (const p of meta.expression_presets) {
      const b = el("button", {}, presets); b.textContent = p.name;
      b.onclick = function () { stopDrive(); s.expression = p.expression.slice(); s.pose[6] = p.jaw[0]; s.pose[7] = p.jaw[1]; s.pose[8] = p.jaw[2]; sliders.forEach(function (f) { f(); }); viewer.dirty = true; };
    }
    meta.expression_names.forEach(function (name, i) {
      const r = meta.expression_ranges[i];
      slider(panel, name, r[0], r[1], 0.01, function () { return s.expression[i]; }, function (v) { s.expression[i] = v; });
    });
    el("h2", {}, panel).textContent = "Head pose (neck, degrees) and jaw";
    slider(panel, "yaw", -60, 60, 0.5, function () { return head.yaw; }, function (v) { head.yaw = v; applyHead(); });
    slider(panel, "pitch", -40, 40, 0.5, function () { return head.pitch; }, function (v) { head.pitch = v; applyHead(); });
    slider(panel, "roll", -40, 40, 0.5, function () { return head.roll; }, function (v) { head.roll = v; applyHead(); });
    slider(panel, "jaw", -0.1, 0.5, 0.005, function () { return s.pose[6]; }, function (v) { s.pose[6] = v; });
    el("h2", {}, panel).textContent = "Drive";
    const drives = el("div", { class: "buttons" }, panel);
    for (const d of meta.drive_presets) { const b = el("button", {}, drives); b.textContent = d.name; b.onclick = function () { playDrive(viewer.avatar.drives[d.name], d.name); }; }
    const pause = el("button", {}, drives); pause.textContent = "pause";
    pause.onclick = function () { if (viewer.playing) { viewer.playing.paused = !viewer.playing.paused; pause.textContent = viewer.playing.paused ? "play" : "pause"; } };
    const file = el("input", { type: "file", accept: ".csv,text/csv" }, el("div", { class: "row" }, panel));
    el("p", { class: "note" }, panel).textContent = "Drop an expression CSV or an ARKit / Live Link Face capture on the page (or choose one) to play it. Drag: orbit, wheel: zoom, double-click: reset view.";
    function loadCSV(f) {
      f.text().then(function (text) {
        try { playDrive(parseCSV(text, meta, viewer.avatar.E, viewer.avatar, viewer.arkitAngles), f.name); } catch (err) { status.textContent = "CSV " + f.name + ": " + err.message; }
      });
    }
    file.addEventListener("change", function () { if (file.files[0]) loadCSV(file.files[0]); });
    document.addEventListener("dragover", function (ev) { ev.preventDefault(); });
    document.addEventListener("drop", function (ev) { ev.preventDefault(); if (ev.dataTransfer.files[0]) loadCSV(ev.dataTransfer.files[0]); });
    viewer.playDrive = playDrive;
    function playDrive(d, name, frame) { // frame given: paused on that frame (scripts, tests)
      viewer.playing = { drive: d, name: name, start: performance.now(), paused: frame !== undefined }; pause.textContent = frame !== undefined ? "play" : "pause";
      status.textContent = "playing " + name + " (" + (d.kind === "arkit" ? "ARKit capture, " : "") + d.frames + " frames" + (d.kind === "arkit" ? " at " + d.fps + " fps" : "") + ")" + (d.notes && d.notes.length ? "; " + d.notes.join("; ") : "");
      if (frame !== undefined) { showFrame(viewer, d, frame); viewer.render(); viewer.dirty = false; if (viewer.refreshUI) viewer.refreshUI(); }
    }
    function stopDrive() { if (viewer.playing) { viewer.playing = null; viewer.driveYaw = 0; status.textContent = ""; } }
    viewer.refreshUI = function () { sliders.forEach(function (f) { f(); }); };
    // orbit camera
    const canvas = viewer.splat.canvas; let drag = null;
    canvas.addEventListener("mousedown", function (ev) { drag = [ev.clientX, ev.clientY, s.yaw, s.elev]; });
    window.addEventListener("mouseup", function () { drag = null; });
    window.addEventListener("mousemove", function (ev) {
      if (!drag) return;
      s.viewmat = null; s.yaw = drag[2] - (ev.clientX - drag[0]) * 0.4; s.elev = Math.max(-80, Math.min(80, drag[3] + (ev.clientY - drag[1]) * 0.3)); viewer.dirty = true;
    });
    canvas.addEventListener("wheel", function (ev) { ev.preventDefault(); s.viewmat = null; s.zoom = Math.max(0.3, Math.min(6, s.zoom * Math.exp(-ev.deltaY * 0.001))); viewer.dirty = true; }, { passive: false });
    canvas.addEventListener("dblclick", function () { s.viewmat = null; s.yaw = 0; s.elev = 0; s.zoom = 1; viewer.dirty = true; });
  }

  function showFrame(viewer, d, f) { // a drive's frame f -> the viewer's state
    const E = viewer.avatar.E;
    viewer.state.expression = Array.from(d.expression.subarray(f * E, f * E + E));
    viewer.state.pose = Array.from(d.pose.subarray(f * 18, f * 18 + 18));
    viewer.driveYaw = d.yaw[f];
  }

  function loop(viewer) {
    const fpsEl = document.getElementById("fps");
    function tick(now) {
      const p = viewer.playing;
      if (p && !p.paused) { showFrame(viewer, p.drive, Math.floor((now - p.start) / 1000 * p.drive.fps) % p.drive.frames); viewer.dirty = true; }
      if (viewer.dirty) {
        viewer.dirty = false;
        const st = viewer.render();
        viewer.frameTimes.push(now); while (viewer.frameTimes.length > 30) viewer.frameTimes.shift();
        const ft = viewer.frameTimes, fps = ft.length > 1 ? 1000 * (ft.length - 1) / (ft[ft.length - 1] - ft[0]) : 0;
        fpsEl.textContent = (p && !p.paused ? fps.toFixed(1) + " fps | " : "") + st.frame_ms.toFixed(1) + " ms CPU (pose " + st.pose_ms.toFixed(1) + ", project " + st.project_ms.toFixed(1) + ", sort " + st.sort_ms.toFixed(1) + ") | " + st.visible + " / " + viewer.avatar.N + " Gaussians";
        if (viewer.refreshUI && p) viewer.refreshUI();
      }
      requestAnimationFrame(tick);
    }
    requestAnimationFrame(tick);
  }

  function main() {
    const api = { ready: false, error: null, renderedFrames: 0 };
    window.zero1toaViewer = api;
    try {
      const node = document.getElementById("zero1toa-package");
      const pkg = parsePackage(base64Bytes(node.textContent));
      const canvas = document.getElementById("view");
      const viewer = new Viewer(pkg, canvas);
      const q = hashParams(), s = viewer.state;
      if (q.w) s.width = parseInt(q.w, 10);
      if (q.h) s.height = parseInt(q.h, 10);
      if (q.yaw) s.yaw = parseFloat(q.yaw);
      if (q.elev) s.elev = parseFloat(q.elev);
      if (q.zoom) s.zoom = parseFloat(q.zoom);
      if (q.bg) s.background = parseFloat(q.bg);
      if (q.arkit_angles) viewer.arkitAngles = q.arkit_angles;
      if (q.expr) { const pe = parseExpression(q.expr, viewer.meta, viewer.avatar.E); s.expression = pe.expression; s.pose[6] = pe.jaw[0]; s.pose[7] = pe.jaw[1]; s.pose[8] = pe.jaw[2]; }
      if (q.ui === "0") document.body.classList.add("bare");
      document.body.style.background = "rgb(" + [0, 0, 0].map(function () { return Math.round(255 * s.background); }).join(",") + ")";
      buildUI(viewer);
      viewer.render();
      Object.defineProperty(api, "renderedFrames", { get: function () { return viewer.renderedFrames; } });
      api.setState = function (u) { return viewer.setState(u); };
      api.getState = function () { return JSON.parse(JSON.stringify(viewer.state)); };
      api.camera = function () { return viewer.camera(); };
      api.benchmark = function (n, drive) { return viewer.benchmark(n || 60, drive); };
      api.play = function (name) {
        if (!viewer.avatar.drives[name]) throw new Error("unknown drive preset " + name + "; presets: " + Object.keys(viewer.avatar.drives).join(", "));
        viewer.playDrive(viewer.avatar.drives[name], name);
      };
      const csvSummary = function (d) {
        const out = { frames: d.frames, fps: d.fps, kind: d.kind || "csv", expression: Array.from(d.expression), pose: Array.from(d.pose) };
        if (d.kind === "arkit") Object.assign(out, { capture_fps: d.capture_fps, notes: d.notes, skipped: d.skipped, unknown: d.unknown, clipped: d.clipped, angles: d.angles });
        return out;
      };
      api.parseCSV = function (text, arkitAngles) { return csvSummary(parseCSV(text, viewer.meta, viewer.avatar.E, viewer.avatar, arkitAngles || viewer.arkitAngles)); };
      api.playCSV = function (text, name, frame) { // as a dropped file; frame: hold that frame
        const d = parseCSV(text, viewer.meta, viewer.avatar.E, viewer.avatar, viewer.arkitAngles);
        if (frame !== undefined && !(frame >= 0 && frame < d.frames)) throw new Error("frame " + frame + " is outside the capture's " + d.frames + " frames");
        viewer.playDrive(d, name || "capture.csv", frame);
        return { frames: d.frames, fps: d.fps, kind: d.kind || "csv", notes: d.notes || [], status: document.getElementById("status").textContent };
      };
      api.meta = viewer.meta; api.targetFormat = viewer.splat.targetFormat; api.stats = function () { return viewer.lastStats; };
      if (q.play) api.play(q.play);
      api.ready = true;
      loop(viewer);
    } catch (err) {
      api.error = String(err && err.stack || err);
      const st = document.getElementById("status"); if (st) st.textContent = "viewer error: " + err.message;
      throw err;
    }
  }
  main();
})();
