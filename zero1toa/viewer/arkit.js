// zero1toa viewer: ARKit / Live Link Face captures dropped on the page.
//
// Why a port: the page reads a dropped CSV itself (no server), and it must pose it exactly as
// `zero1toa animate --drive capture.csv` does. So this is zero1toa/animate/arkit.py
// (canonical_name/_key, parse_timecode, fps_from_timecodes, load_arkit_csv, euler_to_axis_angle,
// arkit_sequence) and progressive/sequences.py is_arkit_csv, line for line where it matters
// (Python's csv.reader and float() grammar, float32 storage of values and angles, the same
// messages for skipped rows). What depends on the head travels in the package's `arkit` block
// (zero1toa.animate.arkit.viewer_mapping): the name table, the units, which pose slot each rotation
// group drives and the matrices arkit_expression [52, E], arkit_jaw [52, 3], arkit_eyes [52, 6].
// Exposes window.zero1toaArkit for viewer.js.
(function () {
  "use strict";
  const { rodrigues, matToAxisAngle, mul3 } = window.zero1toaRotations; // rotations.js

  function csvRows(text) { // Python's csv.reader (excel dialect): quoted fields, "" escapes, \r\n / \n / \r
    const rows = []; let row = [], field = "", inQ = false, quoted = false;
    for (let i = 0; i < text.length; i++) {
      const c = text[i];
      if (inQ) {
        if (c === '"') { if (text[i + 1] === '"') { field += '"'; i++; } else inQ = false; }
        else field += c;
      } else if (c === '"' && field === "" && !quoted) { inQ = true; quoted = true; }
      else if (c === ",") { row.push(field); field = ""; quoted = false; }
      else if (c === "\n" || c === "\r") {
        if (c === "\r" && text[i + 1] === "\n") i++;
        if (row.length || field !== "" || quoted) row.push(field);
        rows.push(row); row = []; field = ""; quoted = false;
      } else field += c;
    }
    if (row.length || field !== "" || quoted) { row.push(field); rows.push(row); }
    return rows;
  }
  function arkitKey(name) { // arkit.py _key: mouthSmile_L / MouthSmileLeft / mouth_smile_left -> mouthsmileleft
    let t = String(name).trim();
    t = t.replace(/^(blendshapes?|arkit)[._:]/i, "");
    t = t.replace(/[_.\- ]?L$/, "Left");
    t = t.replace(/[_.\- ]?R$/, "Right");
    return t.toLowerCase().replace(/[^a-z0-9]/g, "");
  }
  function arkitCanonical(col, A) { // arkit.py canonical_name
    const keys = A.keys, k = arkitKey(col);
    if (Object.prototype.hasOwnProperty.call(keys, k)) return keys[k];
    const k2 = String(col).toLowerCase().replace(/[^a-z0-9]/g, "");
    return Object.prototype.hasOwnProperty.call(keys, k2) ? keys[k2] : null;
  }
  function isArkitHeader(cols, A) { // sequences.py is_arkit_csv (which starts with arkit.py is_arkit_header)
    const strong = new Set(A.columns.concat(A.rotation_columns, ["BlendShapeCount"]));
    if (!cols.some(function (c) { return strong.has(arkitCanonical(c, A)); })) return false;
    const own = new Set(A.own_columns);
    let nOwn = 0, nArkit = 0;
    for (const c of cols) {
      const isOwn = own.has(c);
      if (isOwn || c.startsWith(A.own_prefix)) nOwn++;
      const n = isOwn ? null : arkitCanonical(c, A);
      if (!isOwn && n !== null && n !== "frame" && n !== "time") nArkit++;
    }
    return nArkit > nOwn;
  }
  const PY_DIGITS = "\\d(?:_?\\d)*";
  const PY_FLOAT = new RegExp("^[+-]?(?:" + PY_DIGITS + "(?:\\.(?:" + PY_DIGITS + ")?)?|\\." + PY_DIGITS + ")(?:[eE][+-]?" + PY_DIGITS + ")?$");
  const PY_SPECIAL = /^[+-]?(?:inf|infinity|nan)$/i;
  function pyFloat(cell) { // Python float(): a number, NaN/Infinity for inf/nan, undefined when float() would raise
    const s = String(cell).trim();
    if (PY_FLOAT.test(s)) return Number(s.replace(/_/g, ""));
    if (PY_SPECIAL.test(s)) return /nan/i.test(s) ? NaN : (s[0] === "-" ? -Infinity : Infinity);
    return undefined;
  }
  function pyRepr(cell) { return "'" + String(cell).replace(/\\/g, "\\\\").replace(/'/g, "\\'") + "'"; }
  function median(a) { const s = Array.from(a).sort(function (x, y) { return x - y; }), n = s.length; return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2; }
  function pyRound3(x) { const s = x * 1000; let r = Math.round(s); if (Math.abs(s - Math.trunc(s)) === 0.5 && r % 2 !== 0) r -= 1; return r / 1000; }
  const TIMECODE = /^\s*(\d+):(\d{1,2}):(\d{1,2})[:;.](\d+)(?:\.(\d+))?\s*$/;
  function parseTimecode(text) { // arkit.py parse_timecode: HH:MM:SS:FF.sss -> [whole seconds, FF, sub-frame]
    const m = TIMECODE.exec(String(text));
    if (!m) throw new Error("timecode " + pyRepr(text) + " is not HH:MM:SS:FF(.sss)");
    return [+m[1] * 3600 + +m[2] * 60 + +m[3], +m[4], m[5] ? Number("0." + m[5]) : 0];
  }
  function fpsFromTimecodes(codes, rates) { // arkit.py fps_from_timecodes
    const p = codes.map(parseTimecode);
    if (p.length < 2) return null;
    const beforeWrap = [];
    for (let i = 0; i < p.length - 1; i++) if (p[i + 1][0] > p[i][0]) beforeWrap.push(p[i][1]);
    if (!beforeWrap.length) return null;
    const top = Math.max(Math.max.apply(null, p.map(function (x) { return x[1]; })), Math.max.apply(null, beforeWrap)) + 1;
    const tc = rates.find(function (r) { return r >= top; }) || top;
    const t = p.map(function (x) { return x[0] * tc + x[1] + x[2]; }), steps = [];
    for (let i = 1; i < t.length; i++) if (t[i] - t[i - 1] > 0) steps.push(t[i] - t[i - 1]);
    if (!steps.length) return null;
    const rate = tc / median(steps);
    return Math.abs(rate - Math.round(rate)) < 0.02 ? Math.round(rate) : pyRound3(rate);
  }
  function arkitEulerToAxisAngle(yaw, pitch, roll) { // radians; arkit.py euler_to_axis_angle: R = Ry(yaw) Rx(-pitch) Rz(roll)
    const a = [0, 0, 0, 0, 0, 0, 0, 0, 0], b = a.slice(), c = a.slice();
    rodrigues(0, yaw, 0, a, 0); rodrigues(-pitch, 0, 0, b, 0); rodrigues(0, 0, roll, c, 0);
    return matToAxisAngle(mul3(mul3(a, b), c));
  }

  // rows (csvRows) of an ARKit capture -> the drive arkit_sequence makes, plus what reading it noted.
  // mapping: {meta: the package's arkit block, expression, jaw, eyes: its matrices (flat, row-major)}.
  function parseArkit(rows, mapping, E, angles, maxReported) {
    const A = mapping.meta, NA = A.columns.length, rep = maxReported || 5;
    const scale = A.rotation.unit_scale[angles];
    if (scale === undefined) throw new Error("arkit_angles must be one of " + Object.keys(A.rotation.unit_scale).join(", ") + ", got " + angles);
    const numbered = [];
    rows.forEach(function (r, i) { if (r.some(function (c) { return c.trim().length; })) numbered.push([i + 1, r]); });
    if (!numbered.length) throw new Error("the file is empty (expected a header such as Timecode,BlendShapeCount,EyeBlinkLeft,...)");
    const header = numbered[0][1], data = numbered.slice(1);
    const canon = header.map(function (c) { return arkitCanonical(c, A); });
    const unknown = header.filter(function (c, i) { return canon[i] === null; }), seen = {};
    canon.forEach(function (n, i) {
      if (n === null) return;
      if (n in seen) throw new Error("columns " + pyRepr(header[seen[n]]) + " and " + pyRepr(header[i]) + " both name " + n);
      seen[n] = i;
    });
    const numeric = []; canon.forEach(function (n, i) { if (n !== null && n !== "Timecode") numeric.push(i); });
    const skipped = [], good = [];
    for (const [line, row] of data) {
      if (row.length !== header.length) { skipped.push("line " + line + ": " + row.length + " values, the header has " + header.length + " columns"); continue; }
      let bad = null;
      for (const i of numeric) {
        const v = pyFloat(row[i]);
        if (v === undefined) { bad = "line " + line + ", column " + header[i] + ": " + pyRepr(row[i]) + " is not a number"; break; }
        if (!isFinite(v)) { bad = "line " + line + ", column " + header[i] + ": " + pyRepr(row[i]) + " is not a finite number"; break; }
      }
      if (bad) { skipped.push(bad); continue; }
      good.push(row);
    }
    if (!good.length) throw new Error("no valid row (" + skipped.length + " skipped: " + (skipped.slice(0, rep).join("; ") || "no data rows after the header") + ")");
    const T = good.length, values = new Float32Array(T * NA); // float32, as load_arkit_csv stores them
    A.columns.forEach(function (n, k) { if (n in seen) for (let t = 0; t < T; t++) values[t * NA + k] = pyFloat(good[t][seen[n]]); });
    let clipped = 0;
    for (let i = 0; i < values.length; i++) { const v = values[i]; if (v < A.clip[0] || v > A.clip[1]) { clipped++; values[i] = Math.min(A.clip[1], Math.max(A.clip[0], v)); } }
    // expression, jaw and eyes: values @ the package's matrices
    const expr = new Float64Array(T * E), pose = new Float64Array(T * 18), BX = mapping.expression, BJ = mapping.jaw, BE = mapping.eyes;
    for (let t = 0; t < T; t++) for (let k = 0; k < NA; k++) {
      const v = values[t * NA + k]; if (v === 0) continue;
      for (let e = 0; e < E; e++) expr[t * E + e] += v * BX[k * E + e];
      for (let j = 0; j < 3; j++) pose[t * 18 + 6 + j] += v * BJ[k * 3 + j];
      for (let j = 0; j < 6; j++) pose[t * 18 + 9 + j] += v * BE[k * 6 + j];
    }
    // rotations: a group with any of its columns in the file sets its joint (missing angles are 0)
    for (const g in A.rotation.groups) {
      const G = A.rotation.groups[g];
      if (!G.columns.some(function (c) { return c in seen; })) continue;
      for (let t = 0; t < T; t++) {
        const ang = G.columns.map(function (c) { return c in seen ? Math.fround(pyFloat(good[t][seen[c]]) * scale) : 0; });
        const aa = arkitEulerToAxisAngle(ang[0], ang[1], ang[2]);
        for (let j = 0; j < 3; j++) pose[t * 18 + G.pose_offset + j] = aa[j];
      }
    }
    const notes = [];
    let fps = null;
    if ("Timecode" in seen) {
      try { fps = fpsFromTimecodes(good.map(function (r) { return r[seen.Timecode]; }), A.timecode_rates); }
      catch (err) { notes.push(err.message + "; the frame rate is not derived from the timecodes"); }
    } else if ("time" in seen || "timestamp" in seen) {
      const col = seen["time" in seen ? "time" : "timestamp"], dt = [];
      for (let t = 1; t < T; t++) { const d = pyFloat(good[t][col]) - pyFloat(good[t - 1][col]); if (d > 0) dt.push(d); }
      fps = dt.length ? pyRound3(1 / median(dt)) : null;
    }
    if (skipped.length) notes.push("skipped " + skipped.length + " row(s): " + skipped.slice(0, rep).join("; ") + (skipped.length > rep ? " and " + (skipped.length - rep) + " more" : ""));
    if (unknown.length) notes.push("ignored column(s) that are not ARKit blendshapes or Live Link Face rotations: " + unknown.join(", "));
    if (clipped) notes.push("clipped " + clipped + " blendshape value(s) outside [0, 1]");
    if (fps === null) notes.push("no frame rate in the file: playing at 24 fps");
    return { expression: expr, pose: pose, yaw: new Float32Array(T), frames: T, fps: fps || 24, kind: "arkit", capture_fps: fps,
      notes: notes, skipped: skipped, unknown: unknown, clipped: clipped, angles: angles };
  }
  window.zero1toaArkit = { csvRows: csvRows, arkitKey: arkitKey, arkitCanonical: arkitCanonical, isArkitHeader: isArkitHeader,
    parseTimecode: parseTimecode, fpsFromTimecodes: fpsFromTimecodes, eulerToAxisAngle: arkitEulerToAxisAngle, parseArkit: parseArkit };
})();
