// The peak rate of one core's float32 FMAs and of its vdpbf16ps, 28 independent
// accumulators each, best of 400 bursts (docs/backends.md quotes it):
//   gcc -O2 -mavx512f -mavx512bf16 scripts/bf16_peak.c -o /tmp/bf16_peak && /tmp/bf16_peak
#include <immintrin.h>
#include <stdio.h>
#include <time.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
#define N 20000
int main(){
  __m512 acc[28]; for(int i=0;i<28;i++) acc[i]=_mm512_set1_ps(0.f);
  __m512 a=_mm512_set1_ps(1e-3f), b=_mm512_set1_ps(1e-3f);
  __m512bh ah=(__m512bh)_mm512_set1_epi32(0x3a833a83), bh=(__m512bh)_mm512_set1_epi32(0x3a833a83);
  double best_f=1e9,best_b=1e9;
  for(int rep=0;rep<400;rep++){
    double t0=now();
    for(int i=0;i<N;i++){
      #pragma GCC unroll 28
      for(int j=0;j<28;j++){ acc[j]=_mm512_fmadd_ps(a,b,acc[j]); __asm__ volatile(""::"v"(acc[j])); }
    }
    double t1=now(); if(t1-t0<best_f) best_f=t1-t0;
    t0=now();
    for(int i=0;i<N;i++){
      #pragma GCC unroll 28
      for(int j=0;j<28;j++){ acc[j]=_mm512_dpbf16_ps(acc[j],ah,bh); __asm__ volatile(""::"v"(acc[j])); }
    }
    t1=now(); if(t1-t0<best_b) best_b=t1-t0;
  }
  float s=0; for(int j=0;j<28;j++) s+=_mm512_reduce_add_ps(acc[j]);
  double fl_f=2.0*16*28*N, fl_b=2.0*32*28*N;  // flops: FMA 16 lanes x2; dpbf16 32 products x2
  printf("one core: fp32 FMA %.1f GFLOP/s, bf16 vdpbf16ps %.1f GFLOP/s (%g)\n", fl_f/best_f/1e9, fl_b/best_b/1e9, s);
}
