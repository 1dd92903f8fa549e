// Which compiled copy of the kernels runs: CPU detection, FASTRNN_ISA, the table.
#pragma once

#include <string>
#include <vector>

#include "common.h"

namespace fastrnn {

// ISA paths compiled into this build that this CPU (and OS) can run, best last.
std::vector<std::string> supported_isas();

// Paths compiled into this build, whether or not this CPU runs them.
std::vector<std::string> compiled_isas();

// CPU features found by CPUID (empty off x86).
std::vector<std::string> cpu_features();

// The table in use. Chosen on first call: FASTRNN_ISA if set, else the best supported.
const KernelTable& kernels();

// Selects a path by name. Throws std::invalid_argument naming the value and
// the supported paths if the name is unknown or this CPU cannot run it.
void select_isa(const std::string& name);

// Applies FASTRNN_ISA (or the best path when unset); throws like select_isa.
void select_isa_from_environment();

}  // namespace fastrnn
