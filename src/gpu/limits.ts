import { GpuLimitExceeded } from "./errors.ts";

/**
 * Which limits the device is requested with. `adapter` raises the limits training needs to the adapter's maxima;
 * `portable` takes WebGPU's defaults (128 MiB storage binding, 256 MiB buffer, 16 KiB workgroup memory, 256 invocations
 * per workgroup, 8 storage buffers per stage), which every conformant adapter supports: whatever runs under `portable`
 * runs anywhere.
 */
export const GPU_LIMITS_MODES = ["adapter", "portable"] as const;

export type GpuLimitsMode = (typeof GPU_LIMITS_MODES)[number];

/** Limits we ask for up to the adapter's maximum under `adapter`: the defaults are far below what training needs. */
export const RAISED_LIMITS = [
  "maxBufferSize",
  "maxStorageBufferBindingSize",
  "maxStorageBuffersPerShaderStage",
  "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupSizeX",
  "maxComputeWorkgroupSizeY",
  "maxComputeWorkgroupsPerDimension",
] as const;

/** WebGPU's default limits (the spec's table), for the ones a compute workload can meet. */
export const DEFAULT_LIMITS = {
  maxBufferSize: 268435456,
  maxStorageBufferBindingSize: 134217728,
  maxStorageBuffersPerShaderStage: 8,
  maxComputeWorkgroupStorageSize: 16384,
  maxComputeInvocationsPerWorkgroup: 256,
  maxComputeWorkgroupSizeX: 256,
  maxComputeWorkgroupSizeY: 256,
  maxComputeWorkgroupSizeZ: 64,
  maxComputeWorkgroupsPerDimension: 65535,
} as const;

/**
 * What one entry point of a WGSL module takes from the device: the storage buffers and workgroup variables it reaches
 * (through the functions it calls) and its workgroup size, override constants applied. A field is undefined where the
 * source uses something this reader does not evaluate; the driver still validates those.
 */
export interface KernelResources {
  readonly storageBuffers: number;
  readonly workgroupBytes: number | undefined;
  readonly workgroupSize: readonly [number, number, number] | undefined;
}

const stripComments = (source: string): string => source.replace(/\/\*[\s\S]*?\*\//g, " ").replace(/\/\/[^\n]*/g, "");

/** Splits on commas outside <> and (). */
const splitTop = (s: string): string[] => {
  const parts: string[] = [];
  let depth = 0, start = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === "<" || c === "(") depth++;
    else if (c === ">" || c === ")") depth--;
    else if (c === "," && depth === 0) parts.push(s.slice(start, i)), start = i + 1;
  }
  parts.push(s.slice(start));
  return parts.map((p) => p.trim()).filter((p) => p.length > 0);
};

/** Integer arithmetic over literals and named constants: + - * / % << >> and parentheses. */
const evaluate = (expr: string, names: ReadonlyMap<string, number>): number | undefined => {
  const tokens = expr.match(/0x[0-9a-fA-F]+[iu]?|\d+[iu]?|[A-Za-z_]\w*|<<|>>|[-+*/%()]/g) ?? [];
  if (tokens.join("").length !== expr.replace(/\s+/g, "").length) return undefined;
  let i = 0;
  const atom = (): number | undefined => {
    const t = tokens[i++];
    if (t === undefined) return undefined;
    if (t === "(") {
      const v = sum();
      return tokens[i++] === ")" ? v : undefined;
    }
    if (t === "-") {
      const v = atom();
      return v === undefined ? undefined : -v;
    }
    if (/^(0x|\d)/.test(t)) return Number.parseInt(t.replace(/[iu]$/, ""));
    return names.get(t);
  };
  const product = (): number | undefined => {
    let v = atom();
    while (v !== undefined && (tokens[i] === "*" || tokens[i] === "/" || tokens[i] === "%")) {
      const op = tokens[i++], w = atom();
      if (w === undefined || (op !== "*" && w === 0)) return undefined;
      v = op === "*" ? v * w : op === "/" ? Math.trunc(v / w) : v % w;
    }
    return v;
  };
  const additive = (): number | undefined => {
    let v = product();
    while (v !== undefined && (tokens[i] === "+" || tokens[i] === "-")) {
      const op = tokens[i++], w = product();
      if (w === undefined) return undefined;
      v = op === "+" ? v + w : v - w;
    }
    return v;
  };
  const sum = (): number | undefined => {
    let v = additive();
    while (v !== undefined && (tokens[i] === "<<" || tokens[i] === ">>")) {
      const op = tokens[i++], w = additive();
      if (w === undefined) return undefined;
      v = op === "<<" ? v * 2 ** w : Math.floor(v / 2 ** w);
    }
    return v;
  };
  const v = sum();
  return i === tokens.length ? v : undefined;
};

interface Layout {
  readonly size: number;
  readonly align: number;
}

const roundUp = (align: number, n: number) => Math.ceil(n / align) * align;

/** WGSL's size and alignment of a type (the spec's memory layout rules); undefined for what this reader skips. */
const layoutOf = (
  type: string,
  names: ReadonlyMap<string, number>,
  structs: ReadonlyMap<string, string>,
  seen: ReadonlySet<string> = new Set(),
): Layout | undefined => {
  const t = type.trim();
  if (/^(f32|u32|i32|bool)$/.test(t) || /^atomic\s*<\s*(u32|i32)\s*>$/.test(t)) return { size: 4, align: 4 };
  const vec = /^vec([234])(?:([fiu])|\s*<\s*(f32|u32|i32)\s*>)$/.exec(t);
  if (vec !== null) {
    const n = Number(vec[1]);
    return { size: 4 * n, align: n === 2 ? 8 : 16 };
  }
  const mat = /^mat([234])x([234])(?:f|\s*<\s*f32\s*>)$/.exec(t);
  if (mat !== null) {
    const column = Number(mat[2]) === 2 ? 8 : 16;
    return { size: Number(mat[1]) * column, align: column };
  }
  const array = /^array\s*<([\s\S]*)>$/.exec(t);
  if (array !== null) {
    const [element, count, ...rest] = splitTop(array[1]);
    if (element === undefined || count === undefined || rest.length > 0) return undefined;
    const e = layoutOf(element, names, structs, seen);
    const n = evaluate(count, names);
    return e && n !== undefined ? { size: n * roundUp(e.align, e.size), align: e.align } : undefined;
  }
  const body = structs.get(t);
  if (body === undefined || seen.has(t) || body.includes("@")) return undefined;
  let offset = 0, align = 1;
  for (const member of splitTop(body)) {
    const colon = member.indexOf(":");
    const m = colon < 0 ? undefined : layoutOf(member.slice(colon + 1), names, structs, new Set([...seen, t]));
    if (m === undefined) return undefined;
    offset = roundUp(m.align, offset) + m.size;
    align = Math.max(align, m.align);
  }
  return { size: roundUp(align, offset), align };
};

/** The module's top-level functions: name and body (braces matched). */
const functionsOf = (source: string): Map<string, { start: number; end: number; body: string }> => {
  const out = new Map<string, { start: number; end: number; body: string }>();
  const re = /\bfn\s+([A-Za-z_]\w*)\s*\(/g;
  for (let m = re.exec(source); m !== null; m = re.exec(source)) {
    const open = source.indexOf("{", m.index);
    if (open < 0) break;
    let depth = 0, end = open;
    for (; end < source.length; end++) {
      if (source[end] === "{") depth++;
      else if (source[end] === "}" && --depth === 0) break;
    }
    out.set(m[1], { start: m.index, end: end + 1, body: source.slice(m.index, end + 1) });
    re.lastIndex = end + 1;
  }
  return out;
};

/** What `entryPoint` of `source` needs from the device, with `constants` overriding the `override` declarations. */
export const kernelResources = (
  source: string,
  entryPoint: string,
  constants: Readonly<Record<string, number>> = {},
): KernelResources => {
  const code = stripComments(source);
  const functions = functionsOf(code);
  // The module scope: the source with the function bodies cut out.
  let outside = "";
  let at = 0;
  for (const f of [...functions.values()].sort((a, b) => a.start - b.start)) {
    outside += code.slice(at, f.start) + ";";
    at = f.end;
  }
  outside += code.slice(at);

  const names = new Map<string, number>();
  const decl = /(?:^|[;}])\s*(const|override)\s+([A-Za-z_]\w*)\s*(?::\s*[\w<>\s]+?)?\s*(?:=\s*([^;]+))?;/g;
  for (let m = decl.exec(outside); m !== null; m = decl.exec(outside)) {
    const [, kind, name, init] = m;
    const given = kind === "override" ? constants[name] : undefined;
    const value = given ?? (init === undefined ? undefined : evaluate(init, names));
    if (value !== undefined) names.set(name, value);
    decl.lastIndex = m.index + m[0].length - 1; // the ';' may start the next declaration
  }
  const structs = new Map<string, string>();
  for (const m of outside.matchAll(/\bstruct\s+([A-Za-z_]\w*)\s*\{([^}]*)\}/g)) structs.set(m[1], m[2]);
  const globals = new Map<string, { space: string; type: string }>();
  for (const m of outside.matchAll(/\bvar\s*<\s*(\w+)[^>]*>\s*([A-Za-z_]\w*)\s*:\s*([^;=]+)[;=]/g)) {
    globals.set(m[2], { space: m[1], type: m[3] });
  }

  // Everything the entry point reaches through the functions it calls.
  const used = new Set<string>();
  const visit = (fn: string) => {
    const f = functions.get(fn);
    if (f === undefined || used.has(fn)) return;
    used.add(fn);
    for (const [id] of f.body.matchAll(/(?<![.\w])[A-Za-z_]\w*/g)) { // not a member (`v.x`)
      if (functions.has(id)) visit(id);
      else if (globals.has(id)) used.add(id);
    }
  };
  visit(entryPoint);
  const reached = [...globals].filter(([name]) => used.has(name)).map(([, g]) => g);

  let workgroupBytes: number | undefined = 0;
  for (const g of reached.filter((g) => g.space === "workgroup")) {
    const l = layoutOf(g.type, names, structs);
    workgroupBytes = l === undefined || workgroupBytes === undefined ? undefined : workgroupBytes + l.size;
  }
  const escaped = entryPoint.replace(/[^\w]/g, "");
  const attr = new RegExp(`@workgroup_size\\s*\\(((?:[^()]|\\([^()]*\\))*)\\)[^{};]*?\\bfn\\s+${escaped}\\s*\\(`)
    .exec(code);
  const dims = attr === null ? undefined : splitTop(attr[1]).map((e) => evaluate(e, names));
  const workgroupSize = dims === undefined || dims.some((d) => d === undefined)
    ? undefined
    : [dims[0] ?? 1, dims[1] ?? 1, dims[2] ?? 1] as const;
  return {
    storageBuffers: reached.filter((g) => g.space === "storage").length,
    workgroupBytes,
    workgroupSize: workgroupSize as readonly [number, number, number] | undefined,
  };
};

/**
 * The first device limit `entryPoint` of `kernel` exceeds, as a typed error naming the kernel and the limit; undefined
 * when it fits. Run before compiling: not every driver checks these (wgpu 25 does not check workgroup memory at all).
 */
export const checkKernelLimits = (
  limits: GPUSupportedLimits,
  kernel: string,
  entryPoint: string,
  resources: KernelResources,
): GpuLimitExceeded | undefined => {
  const over = (limit: keyof typeof DEFAULT_LIMITS, required: number, what: string) =>
    required <= limits[limit] ? undefined : new GpuLimitExceeded({
      kernel,
      limit,
      required,
      allowed: limits[limit],
      message: `kernel '${kernel}' (${entryPoint}) ${what}, over the device's ${limit} of ${limits[limit]}`,
    });
  const { storageBuffers, workgroupBytes, workgroupSize: size } = resources;
  return over("maxStorageBuffersPerShaderStage", storageBuffers, `binds ${storageBuffers} storage buffers`) ??
    (workgroupBytes === undefined ? undefined : over(
      "maxComputeWorkgroupStorageSize",
      workgroupBytes,
      `needs ${workgroupBytes} bytes of workgroup memory`,
    )) ??
    (size === undefined ? undefined : (
      over("maxComputeInvocationsPerWorkgroup", size[0] * size[1] * size[2], `runs workgroups of [${size}]`) ??
        over("maxComputeWorkgroupSizeX", size[0], `runs workgroups of [${size}]`) ??
        over("maxComputeWorkgroupSizeY", size[1], `runs workgroups of [${size}]`) ??
        over("maxComputeWorkgroupSizeZ", size[2], `runs workgroups of [${size}]`)
    ));
};
