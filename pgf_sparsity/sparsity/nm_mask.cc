// N:M masks on the CPU (sparsity/nm.py's 'kernel' method). Weights grouped (..., M, B): in every group and column
// b, the N members of largest |w| (among equal magnitudes the lower index), returned as bits packed into 32-bit
// words (..., M/W, B): member j is bit j % W of word j / W, W the largest divisor of M up to 32 (nm.py's layout).
//
// One pass over the weights, with no copy of their keys: each column's members go through a sorted list of the
// K most extreme keys so far (K = N, or the M - N + 1 smallest where more are kept than dropped); its last entry
// is the N-th largest key, and a second pass over the group (in cache) keeps the members beyond it plus, in index
// order, as many at it as the quota has left. Columns go 16 at a time, as one vector per member.
#include <cstdint>
#include <cstring>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kLanes = 16;
constexpr int64_t kMaxList = 16;  // nm.py uses the kernel where min(N, M - N + 1) <= kMaxList
constexpr int64_t kAhead = 4;     // blocks of 16 columns prefetched ahead: a group's M rows are M read streams

typedef int32_t Keys __attribute__((vector_size(kLanes * sizeof(int32_t))));
typedef uint32_t Words __attribute__((vector_size(kLanes * sizeof(uint32_t))));

// |w| as its int32 bit pattern, which orders non-negative floats (and NaNs above infinity) like nm.py's keys.
// (A copy of constant size compiles to one vector load or store; the last block's partial one is a call.)
inline Keys Load(const float* w, int64_t lanes) {
  Keys k = {};
  if (lanes == kLanes) {
    std::memcpy(&k, w, sizeof(k));
  } else {
    std::memcpy(&k, w, lanes * sizeof(float));
  }
  return k & 0x7fffffff;
}

inline void Store(uint32_t* out, Words word, int64_t lanes) {
  if (lanes == kLanes) {
    std::memcpy(out, &word, sizeof(word));
  } else {
    std::memcpy(out, &word, lanes * sizeof(uint32_t));
  }
}

inline Keys Max(Keys a, Keys b) { return a > b ? a : b; }
inline Keys Min(Keys a, Keys b) { return a < b ? a : b; }

// One group's mask for `lanes` (<= 16) columns: w points at member 0 of the first column, members `stride` apart.
template <int64_t K, bool KEEP_LARGEST>
void Group(const float* w, int64_t m, int64_t n, int64_t stride, int64_t width, int64_t lanes, uint32_t* out) {
  Keys list[K];
  for (int64_t r = 0; r < K; ++r) list[r] = Keys{} + (KEEP_LARGEST ? -1 : 0x7fffffff);  // beyond every key
  for (int64_t j = 0; j < m; ++j) {
    __builtin_prefetch(w + j * stride + kAhead * kLanes);
    Keys x = Load(w + j * stride, lanes);
    for (int64_t r = 0; r < K; ++r) {
      const Keys y = list[r];
      list[r] = KEEP_LARGEST ? Max(x, y) : Min(x, y);
      x = KEEP_LARGEST ? Min(x, y) : Max(x, y);
    }
  }
  // The keys strictly beyond the threshold are all in the list; the rest of the quota goes to those at it, in
  // index order: kept from the front, or (counting the dropped) dropped from the back.
  const Keys threshold = list[K - 1];
  Keys beyond = {};
  for (int64_t r = 0; r < K; ++r) beyond -= KEEP_LARGEST ? list[r] > threshold : list[r] < threshold;
  const Keys quota = Keys{} + static_cast<int32_t>(KEEP_LARGEST ? n : m - n) - beyond;
  Keys taken_at = {};
  const int64_t words = m / width;
  for (int64_t q = 0; q < words; ++q) {
    const int64_t word = KEEP_LARGEST ? q : words - 1 - q;
    Words bits = {};
    for (int64_t i = 0; i < width; ++i) {
      const int64_t bit = KEEP_LARGEST ? i : width - 1 - i;
      const Keys x = Load(w + (word * width + bit) * stride, lanes);
      const Keys at = x == threshold;
      const Keys chosen = (KEEP_LARGEST ? x > threshold : x < threshold) | (at & (taken_at < quota));
      taken_at -= at;
      bits |= (Words)((KEEP_LARGEST ? chosen : ~chosen) & static_cast<int32_t>(1u << bit));
    }
    Store(out + word * stride, bits, lanes);
  }
}

template <int64_t K, bool KEEP_LARGEST>
void Groups(const float* w, int64_t groups, int64_t m, int64_t n, int64_t columns, int64_t width, uint32_t* out) {
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t b = 0; b < columns; b += kLanes) {
      const int64_t lanes = columns - b < kLanes ? columns - b : kLanes;
      Group<K, KEEP_LARGEST>(w + g * m * columns + b, m, n, columns, width, lanes, out + g * (m / width) * columns + b);
    }
  }
}

template <bool KEEP_LARGEST, int64_t K = 1>
void WithList(int64_t k, const float* w, int64_t groups, int64_t m, int64_t n, int64_t columns, int64_t width,
              uint32_t* out) {
  if constexpr (K < kMaxList) {
    if (k != K) return WithList<KEEP_LARGEST, K + 1>(k, w, groups, m, n, columns, width, out);
  }
  Groups<K, KEEP_LARGEST>(w, groups, m, n, columns, width, out);
}

ffi::Error NmMaskImpl(ffi::Buffer<ffi::F32> weights, ffi::ResultBuffer<ffi::U32> words, int64_t n) {
  const auto d = weights.dimensions();
  if (d.size() < 2) return ffi::Error::InvalidArgument("nm_mask: weights must be grouped (..., M, B)");
  const int64_t columns = d[d.size() - 1], m = d[d.size() - 2];
  const bool keep_largest = n <= m - n;
  const int64_t k = keep_largest ? n : m - n + 1;
  if (n <= 0 || n > m || k > kMaxList) {
    return ffi::Error::InvalidArgument("nm_mask: needs 0 < N <= M and min(N, M - N + 1) <= 16");
  }
  int64_t width = 1;
  for (int64_t v = 1; v <= 32 && v <= m; ++v) width = m % v ? width : v;
  const int64_t groups = columns ? weights.element_count() / (m * columns) : 0;
  if (words->element_count() != groups * (m / width) * columns) {
    return ffi::Error::InvalidArgument("nm_mask: the result must be (..., M/W, B) words");
  }
  (keep_largest ? WithList<true> : WithList<false>)(k, weights.typed_data(), groups, m, n, columns, width,
                                                   words->typed_data());
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(PgfNmMask, NmMaskImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::U32>>()
                                  .Attr<int64_t>("n"));
