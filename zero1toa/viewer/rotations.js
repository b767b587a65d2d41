// Rotation helpers shared by viewer.js and arkit.js, as head/lbs.py computes them
// (axis_angle_to_matrix, matrix_to_axis_angle); row-major 3x3 matrices in flat arrays.
// Exposes window.zero1toaRotations.
(function () {
  "use strict";
  function rodrigues(ax, ay, az, out, o) { // axis-angle -> row-major 3x3 into out[o..o+9]
    const a = Math.hypot(ax, ay, az), s = Math.max(a, 1e-8);
    const x = ax / s, y = ay / s, z = az / s, sn = Math.sin(a), c1 = 1 - Math.cos(a);
    // R = I + sin K + (1 - cos) K^2, K the cross-product matrix of the unit axis
    out[o] = 1 + c1 * (-y * y - z * z); out[o + 1] = -sn * z + c1 * x * y; out[o + 2] = sn * y + c1 * x * z;
    out[o + 3] = sn * z + c1 * x * y; out[o + 4] = 1 + c1 * (-x * x - z * z); out[o + 5] = -sn * x + c1 * y * z;
    out[o + 6] = -sn * y + c1 * x * z; out[o + 7] = sn * x + c1 * y * z; out[o + 8] = 1 + c1 * (-x * x - y * y);
  }
  function matToAxisAngle(R) {
    const cos = Math.min(1 - 1e-7, Math.max(-1 + 1e-7, (R[0] + R[4] + R[8] - 1) / 2)), ang = Math.acos(cos);
    const d = Math.max(2 * Math.sin(ang), 1e-8);
    return [(R[7] - R[5]) / d * ang, (R[2] - R[6]) / d * ang, (R[3] - R[1]) / d * ang];
  }
  function mul3(A, B) { const C = new Array(9); for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) C[i * 3 + j] = A[i * 3] * B[j] + A[i * 3 + 1] * B[3 + j] + A[i * 3 + 2] * B[6 + j]; return C; }
  window.zero1toaRotations = { rodrigues: rodrigues, matToAxisAngle: matToAxisAngle, mul3: mul3 };
})();
