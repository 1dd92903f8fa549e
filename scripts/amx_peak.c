// The peak rate of one core's AMX bf16 tiles (tdpbf16ps), four independent
// output tiles, best of 200 bursts, for output tiles of 16 rows (the unit's
// full height) and of 8 (fastrnn's register tile, csrc/gemm_amx.cc); beside
// scripts/bf16_peak.c's vdpbf16ps and float32 FMA rates (docs/backends.md):
//   gcc -O2 -mamx-tile -mamx-bf16 scripts/amx_peak.c -o /tmp/amx_peak && /tmp/amx_peak
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
struct config { uint8_t palette, start_row, reserved[14]; uint16_t bytes[16]; uint8_t rows[16]; };
#define N 20000
static double rate(int rows) {
  struct config c; memset(&c, 0, sizeof c); c.palette = 1;
  for (int t = 0; t < 8; t++) { c.bytes[t] = 64; c.rows[t] = t >= 6 ? 16 : rows; }  // 6, 7: B
  _tile_loadconfig(&c);
  static uint16_t ones[16 * 32] __attribute__((aligned(64)));
  for (int i = 0; i < 16 * 32; i++) ones[i] = 0x3a83;  // bfloat16 1e-3
  _tile_loadd(4, ones, 64); _tile_loadd(5, ones, 64); _tile_loadd(6, ones, 64); _tile_loadd(7, ones, 64);
  _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
  double best = 1e9;
  for (int rep = 0; rep < 200; rep++) {
    double t0 = now();
    for (int i = 0; i < N; i++) {
      _tile_dpbf16ps(0, 4, 6); _tile_dpbf16ps(1, 4, 7); _tile_dpbf16ps(2, 5, 6); _tile_dpbf16ps(3, 5, 7);
    }
    double t1 = now(); if (t1 - t0 < best) best = t1 - t0;
  }
  static float out[16 * 16]; _tile_stored(0, out, 64);
  _tile_release();
  return 4.0 * N * rows * 16 * 32 * 2 / best / 1e9 + 0 * out[0];  // rows x 16 columns x 32 products
}
int main(){
  if (syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */)) {
    printf("this kernel does not grant the AMX tile state\n"); return 1;
  }
  printf("one core: AMX tdpbf16ps %.0f GFLOP/s (16-row tiles), %.0f GFLOP/s (8-row tiles)\n",
         rate(16), rate(8));
}
