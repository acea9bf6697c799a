// cvk/sim/static_smem.h: the simulator's account of a kernel's static __shared__ storage, so a
// launch is refused where ptxas refuses the kernel ("uses too much shared data", above 48 KiB).
// Included by cvk/sim.h only.
//
// Each `__shared__` declaration is preceded (by the macro) by a block-scope marker,
// `static const char cvk_smem_site`, whose address the site reports when it runs. The marker's
// symbol in the module's ELF symbol table is `_ZZ<function>E13cvk_smem_site...`; the function's
// static storage is every data or TLS symbol `_ZZ<function>E...` (the __shared__ variables are
// its only statics: CUDA device code has no others). A launch sums the functions whose sites
// its threads ran, once each, and refuses it above 48 KiB, or where static and dynamic shared
// memory together pass the launch's limit. Sizes are read once per function.
// Where the module has no symbol table (stripped), nothing is counted. Unlike ptxas, a site
// that no thread reaches is not counted.
#pragma once

#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <map>

namespace cvk::sim {

constexpr size_t kMaxStaticSmem = 48 * 1024;

struct SmemFn {
  size_t bytes = 0;
};

// The symbols of one loaded ELF file, read once.
struct ElfSymbols {
  bool exec = false;  // ET_EXEC: symbol values are absolute addresses
  std::vector<std::pair<std::string, std::pair<std::uintptr_t, size_t>>> data;  // name, (value, size)
};

inline ElfSymbols read_elf_symbols(const char* path) {
  ElfSymbols out;
  const int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return out;
  struct stat st;
  if (fstat(fd, &st) != 0 || st.st_size < static_cast<off_t>(sizeof(Elf64_Ehdr))) {
    close(fd);
    return out;
  }
  const size_t len = static_cast<size_t>(st.st_size);
  void* m = mmap(nullptr, len, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (m == MAP_FAILED) return out;
  const auto* base = static_cast<const unsigned char*>(m);
  const auto* eh = reinterpret_cast<const Elf64_Ehdr*>(base);
  if (std::memcmp(eh->e_ident, ELFMAG, SELFMAG) == 0 && eh->e_ident[EI_CLASS] == ELFCLASS64 &&
      eh->e_shoff + 1ull * eh->e_shnum * sizeof(Elf64_Shdr) <= len) {
    out.exec = eh->e_type == ET_EXEC;
    const auto* sh = reinterpret_cast<const Elf64_Shdr*>(base + eh->e_shoff);
    for (int want : {SHT_SYMTAB, SHT_DYNSYM}) {
      for (unsigned i = 0; i < eh->e_shnum; ++i) {
        if (sh[i].sh_type != static_cast<unsigned>(want) || sh[i].sh_link >= eh->e_shnum) continue;
        const Elf64_Shdr& strs = sh[sh[i].sh_link];
        if (sh[i].sh_offset + sh[i].sh_size > len || strs.sh_offset + strs.sh_size > len) continue;
        const auto* sym = reinterpret_cast<const Elf64_Sym*>(base + sh[i].sh_offset);
        const size_t n = sh[i].sh_size / sizeof(Elf64_Sym);
        const char* names = reinterpret_cast<const char*>(base + strs.sh_offset);
        for (size_t k = 0; k < n; ++k) {
          const int type = ELF64_ST_TYPE(sym[k].st_info);
          if ((type != STT_OBJECT && type != STT_TLS) || sym[k].st_name >= strs.sh_size) continue;
          const char* name = names + sym[k].st_name;
          if (std::strncmp(name, "_ZZ", 3) != 0) continue;
          out.data.push_back({name, {static_cast<std::uintptr_t>(sym[k].st_value),
                                     static_cast<size_t>(sym[k].st_size)}});
        }
      }
      if (!out.data.empty()) break;  // the full table when there is one
    }
  }
  munmap(m, len);
  return out;
}

// The function whose __shared__ site `marker` is, with the bytes of its static storage; null
// where the symbols cannot tell.
inline const SmemFn* resolve_smem_fn(const void* marker) {
  static std::mutex m;
  static std::map<std::string, ElfSymbols> files;
  static std::map<std::string, SmemFn> fns;
  std::lock_guard<std::mutex> g(m);
  Dl_info info;
  if (!dladdr(marker, &info) || !info.dli_fname) return nullptr;
  auto it = files.find(info.dli_fname);
  if (it == files.end()) it = files.emplace(info.dli_fname, read_elf_symbols(info.dli_fname)).first;
  const ElfSymbols& syms = it->second;
  const auto addr = reinterpret_cast<std::uintptr_t>(marker);
  const std::uintptr_t off = syms.exec ? addr : addr - reinterpret_cast<std::uintptr_t>(info.dli_fbase);
  static const char tag[] = "E13cvk_smem_site";
  std::string prefix;
  for (const auto& [name, vs] : syms.data) {
    if (vs.first != off) continue;
    const size_t p = name.find(tag);
    if (p != std::string::npos) {
      prefix = name.substr(0, p + 1);
      break;
    }
  }
  if (prefix.empty()) return nullptr;
  auto f = fns.find(prefix);
  if (f != fns.end()) return &f->second;
  SmemFn fn;
  for (const auto& [name, vs] : syms.data)
    if (name.compare(0, prefix.size(), prefix) == 0 &&
        name.find("cvk_smem_", prefix.size()) == std::string::npos)  // not the site's own
      fn.bytes += vs.second;
  return &fns.emplace(prefix, fn).first->second;
}

inline std::string too_much_shared(size_t bytes) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "uses too much shared data (0x%zx bytes, 0x%zx max)", bytes,
                kMaxStaticSmem);
  return buf;
}

// A __shared__ site ran: count its function's storage towards this launch's.
inline void note_smem_fn(const SmemFn* f) {
  if (!f) return;
  CVK_SIM_UNCHECKED_SCOPE;
  std::vector<const SmemFn*>& seen = launch_smem_fns();
  if (std::find(seen.begin(), seen.end(), f) == seen.end()) seen.push_back(f);
  size_t total = 0;  // every thread reaching a site of a refused launch throws
  for (const SmemFn* s : seen) total += s->bytes;
  if (total > kMaxStaticSmem) throw LaunchError(too_much_shared(total));
  // Without the opt-in, static and dynamic share 48 KiB (the attribute's default is 48 KiB
  // less the static size); with it, cudaFuncSetAttribute refuses static + attribute > 227 KiB.
  const DynamicSmem d = launch_dynamic_smem();
  if (d.max_bytes <= kDefaultMaxDynamicSmem ? total + d.bytes > kDefaultMaxDynamicSmem
                                            : total + d.max_bytes > kOptInMaxSmem)
    throw LaunchError("invalid argument");
}

}  // namespace cvk::sim

// Function scope only (file-scope __shared__ variables are not supported by the simulator).
#define CVK_SMEM_SITE                                                                    \
  {                                                                                      \
    static const char cvk_smem_site = 0;                                                 \
    static const ::cvk::sim::SmemFn* const cvk_smem_fn =                                 \
        ::cvk::sim::resolve_smem_fn(&cvk_smem_site);                                     \
    ::cvk::sim::note_smem_fn(cvk_smem_fn);                                               \
  }
