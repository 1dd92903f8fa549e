#include "dispatch.h"

#include "gemm_int8.h"

#include <cstdlib>
#include <stdexcept>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define FASTRNN_X86 1
#endif
#if defined(FASTRNN_AMX_KERNELS)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace fastrnn {

// Each ISA copy's tables: the float kernels and the int8 products.
#define FASTRNN_DECLARE_TABLES(isa)          \
  namespace isa {                            \
  const KernelTable* kernel_table();         \
  const Int8Kernels* int8_kernel_table();    \
  }
FASTRNN_DECLARE_TABLES(generic)
#if defined(FASTRNN_X86_KERNELS)
FASTRNN_DECLARE_TABLES(avx2)
FASTRNN_DECLARE_TABLES(avx512)
FASTRNN_DECLARE_TABLES(avx512_vnni)
FASTRNN_DECLARE_TABLES(avx512_bf16)
#endif
#if defined(FASTRNN_AMX_KERNELS)
FASTRNN_DECLARE_TABLES(amx_bf16)
#endif
#undef FASTRNN_DECLARE_TABLES

namespace {

struct CpuInfo {
  bool avx = false, avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512dq = false, avx512bw = false, avx512vl = false;
  bool avx512_vnni = false, avx_vnni = false, avx512_bf16 = false;
  bool amx_tile = false, amx_bf16 = false;
  bool os_avx = false, os_avx512 = false;  // the OS saves the wider registers (XCR0)
  bool os_amx = false;                     // ... and the tiles, and lets this process use them
};

#if defined(FASTRNN_AMX_KERNELS)
// Linux hands out the 8 KiB of tile state per process on request
// (arch_prctl ARCH_REQ_XCOMP_PERM for XTILEDATA); without it the first tile
// instruction is SIGILL. Asked once, on the first look at the CPU.
bool os_grants_tiles() {
  constexpr int kReqXcompPerm = 0x1023, kXtileData = 18;
  return syscall(SYS_arch_prctl, kReqXcompPerm, kXtileData) == 0;
}
#endif

#if defined(FASTRNN_X86)
unsigned long long read_xcr0() {
  unsigned eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<unsigned long long>(edx) << 32) | eax;
}
#endif

CpuInfo detect() {
  CpuInfo info;
#if defined(FASTRNN_X86)
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return info;
  const bool osxsave = (c >> 27) & 1;
  info.avx = (c >> 28) & 1;
  info.fma = (c >> 12) & 1;
  info.f16c = (c >> 29) & 1;
  if (osxsave) {
    const unsigned long long xcr0 = read_xcr0();
    info.os_avx = (xcr0 & 0x6) == 0x6;            // SSE and AVX state
    info.os_avx512 = (xcr0 & 0xe6) == 0xe6;       // plus opmask and both ZMM halves
    info.os_amx = (xcr0 & 0x60000) == 0x60000;    // XTILECFG and XTILEDATA
  }
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
    const unsigned last_subleaf = a;
    info.avx2 = (b >> 5) & 1;
    info.avx512f = (b >> 16) & 1;
    info.avx512dq = (b >> 17) & 1;
    info.avx512bw = (b >> 30) & 1;
    info.avx512vl = (b >> 31) & 1;
    info.avx512_vnni = (c >> 11) & 1;
    info.amx_bf16 = (d >> 22) & 1;
    info.amx_tile = (d >> 24) & 1;
    if (last_subleaf >= 1 && __get_cpuid_count(7, 1, &a, &b, &c, &d)) {
      info.avx_vnni = (a >> 4) & 1;
      info.avx512_bf16 = (a >> 5) & 1;
    }
  }
#endif
#if defined(FASTRNN_AMX_KERNELS)
  info.os_amx = info.os_amx && info.amx_tile && info.amx_bf16 && os_grants_tiles();
#else
  info.os_amx = false;
#endif
  return info;
}

const CpuInfo& cpu() {
  static const CpuInfo info = detect();
  return info;
}

bool can_run(const std::string& isa) {
  const CpuInfo& c = cpu();
  if (isa == "generic") return true;
  if (isa == "avx2") return c.os_avx && c.avx && c.avx2 && c.fma;
  if (isa == "avx512")
    return c.os_avx && c.os_avx512 && c.avx2 && c.fma && c.avx512f && c.avx512dq &&
           c.avx512bw && c.avx512vl;
  if (isa == "avx512_vnni") return can_run("avx512") && c.avx512_vnni;
  if (isa == "avx512_bf16") return can_run("avx512_vnni") && c.avx512_bf16;
  if (isa == "amx_bf16") return can_run("avx512_bf16") && c.os_amx;
  return false;
}

struct Tables {
  const KernelTable* kernels;
  const Int8Kernels* int8;
};

Tables tables_for(const std::string& isa) {
  if (isa == "generic") return {generic::kernel_table(), generic::int8_kernel_table()};
#if defined(FASTRNN_X86_KERNELS)
  if (isa == "avx2") return {avx2::kernel_table(), avx2::int8_kernel_table()};
  if (isa == "avx512") return {avx512::kernel_table(), avx512::int8_kernel_table()};
  if (isa == "avx512_vnni") return {avx512_vnni::kernel_table(), avx512_vnni::int8_kernel_table()};
  if (isa == "avx512_bf16") return {avx512_bf16::kernel_table(), avx512_bf16::int8_kernel_table()};
#endif
#if defined(FASTRNN_AMX_KERNELS)
  if (isa == "amx_bf16") return {amx_bf16::kernel_table(), amx_bf16::int8_kernel_table()};
#endif
  return {nullptr, nullptr};
}

Tables current{nullptr, nullptr};

std::string joined(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

}  // namespace

std::vector<std::string> compiled_isas() {
  std::vector<std::string> isas{"generic"};
#if defined(FASTRNN_X86_KERNELS)
  isas.insert(isas.end(), {"avx2", "avx512", "avx512_vnni", "avx512_bf16"});
#endif
#if defined(FASTRNN_AMX_KERNELS)
  isas.push_back("amx_bf16");
#endif
  return isas;
}

std::vector<std::string> supported_isas() {
  std::vector<std::string> out;
  for (const auto& isa : compiled_isas())
    if (can_run(isa)) out.push_back(isa);
  return out;
}

std::vector<std::string> cpu_features() {
  const CpuInfo& c = cpu();
  std::vector<std::string> out;
  const std::pair<const char*, bool> flags[] = {
      {"avx", c.avx && c.os_avx},  {"avx2", c.avx2 && c.os_avx}, {"fma", c.fma && c.os_avx},
      {"f16c", c.f16c},            {"avx512f", c.avx512f && c.os_avx512},
      {"avx512dq", c.avx512dq && c.os_avx512}, {"avx512bw", c.avx512bw && c.os_avx512},
      {"avx512vl", c.avx512vl && c.os_avx512}, {"avx512_vnni", c.avx512_vnni && c.os_avx512},
      {"avx_vnni", c.avx_vnni && c.os_avx}, {"avx512_bf16", c.avx512_bf16 && c.os_avx512},
      {"amx_bf16", c.amx_bf16 && c.os_amx}};
  for (const auto& f : flags)
    if (f.second) out.push_back(f.first);
  return out;
}

void select_isa(const std::string& name) {
  const auto compiled = compiled_isas();
  bool known = false;
  for (const auto& isa : compiled) known = known || isa == name;
  if (!known)
    throw std::invalid_argument("unknown FASTRNN_ISA value '" + name + "'; choose one of " +
                                joined(compiled) + " (this CPU supports " +
                                joined(supported_isas()) + ")");
  if (!can_run(name))
    throw std::invalid_argument("FASTRNN_ISA='" + name + "' asks for more than this CPU has; "
                                "it supports " + joined(supported_isas()));
  current = tables_for(name);
}

void select_isa_from_environment() {
  const char* env = std::getenv("FASTRNN_ISA");
  if (env != nullptr && *env != '\0') {
    select_isa(env);
  } else {
    select_isa(supported_isas().back());
  }
}

const KernelTable& kernels() {
  if (current.kernels == nullptr) select_isa_from_environment();
  return *current.kernels;
}

const Int8Kernels& int8_kernels() {
  if (current.int8 == nullptr) select_isa_from_environment();
  return *current.int8;
}

}  // namespace fastrnn
