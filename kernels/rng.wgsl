// Philox4x32-10 counter-based generator, bit-identical to src/data/rng.ts. Prepended to kernels that draw numbers
// themselves: philox4x32(counter, key) gives four independent u32s; u01 maps one to [0, 1) from its top 24 bits.

fn rng_mulhi(a: u32, b: u32) -> u32 {
  let a0 = a & 0xffffu; let a1 = a >> 16u; let b0 = b & 0xffffu; let b1 = b >> 16u;
  let lo = a0 * b0; let m1 = a1 * b0; let m2 = a0 * b1;
  let carry = ((lo >> 16u) + (m1 & 0xffffu) + (m2 & 0xffffu)) >> 16u;
  return a1 * b1 + (m1 >> 16u) + (m2 >> 16u) + carry;
}

fn philox4x32(counter: vec4u, key: vec2u) -> vec4u {
  var x = counter;
  var k = key;
  for (var r = 0u; r < 10u; r++) {
    let hi0 = rng_mulhi(0xd2511f53u, x.x); let lo0 = 0xd2511f53u * x.x;
    let hi1 = rng_mulhi(0xcd9e8d57u, x.z); let lo1 = 0xcd9e8d57u * x.z;
    x = vec4u(hi1 ^ x.y ^ k.x, lo1, hi0 ^ x.w ^ k.y, lo0);
    k = k + vec2u(0x9e3779b9u, 0xbb67ae85u);
  }
  return x;
}

fn u01(x: u32) -> f32 {
  return f32(x >> 8u) * 5.9604644775390625e-8;
}
