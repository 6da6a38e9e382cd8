// y = x @ W for an N:M kernel W (in, out) held as its kept values and their in-group positions, in blocks of
// 16 outputs: values (out/16, in/M, N, 16) float32, positions (out/16, in/M, N, 16) uint8.
#include <cstdint>
#include <cstring>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kLanes = 16;
constexpr int64_t kMaxRows = 8;  // rows of x that share one pass over the weights

#if defined(__AVX512F__)
// The kept weights' inputs: lane l takes x_group[position[l]].
template <int64_t M>
inline __m512 Select(const float* x_group, __m512i position) {
  if constexpr (M <= 16) {
    return _mm512_permutexvar_ps(position, _mm512_maskz_loadu_ps((__mmask16)((1u << M) - 1), x_group));
  } else if constexpr (M == 32) {
    return _mm512_permutex2var_ps(_mm512_loadu_ps(x_group), position, _mm512_loadu_ps(x_group + 16));
  } else {  // two halves, each selected as above, then chosen by the position's top bit
    const __mmask16 upper = _mm512_test_epi32_mask(position, _mm512_set1_epi32(M / 2));
    return _mm512_mask_blend_ps(upper, Select<M / 2>(x_group, position), Select<M / 2>(x_group + M / 2, position));
  }
}

template <int64_t M, int64_t ROWS>
void Block(const float* x, int64_t in, const float* values, const uint8_t* positions, int64_t groups, int64_t n,
           float* y, int64_t out) {
  __m512 acc[ROWS];
  for (int64_t r = 0; r < ROWS; ++r) acc[r] = _mm512_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t k = 0; k < n; ++k, values += kLanes, positions += kLanes) {
      __m512 v = _mm512_loadu_ps(values);
      __m512i p = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(positions)));
      for (int64_t r = 0; r < ROWS; ++r) acc[r] = _mm512_fmadd_ps(v, Select<M>(x + r * in + g * M, p), acc[r]);
    }
  }
  for (int64_t r = 0; r < ROWS; ++r) _mm512_storeu_ps(y + r * out, acc[r]);
}
#else
template <int64_t M, int64_t ROWS>
void Block(const float* x, int64_t in, const float* values, const uint8_t* positions, int64_t groups, int64_t n,
           float* y, int64_t out) {
  float acc[ROWS][kLanes] = {};
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t k = 0; k < n; ++k, values += kLanes, positions += kLanes) {
      for (int64_t r = 0; r < ROWS; ++r) {
        const float* x_group = x + r * in + g * M;
        for (int64_t l = 0; l < kLanes; ++l) acc[r][l] += values[l] * x_group[positions[l]];
      }
    }
  }
  for (int64_t r = 0; r < ROWS; ++r) std::memcpy(y + r * out, acc[r], sizeof(acc[r]));
}
#endif

template <int64_t M>
void Rows(const float* x, int64_t rows, int64_t in, const float* values, const uint8_t* positions, int64_t n,
          float* y, int64_t out) {
  const int64_t blocks = out / kLanes, groups = in / M, block_size = groups * n * kLanes;
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < blocks; ++b) {
    const float* v = values + b * block_size;
    const uint8_t* p = positions + b * block_size;
    for (int64_t r = 0; r < rows; r += kMaxRows) {
      const float* xr = x + r * in;
      float* yr = y + r * out + b * kLanes;
      switch (rows - r < kMaxRows ? rows - r : kMaxRows) {
        case 1: Block<M, 1>(xr, in, v, p, groups, n, yr, out); break;
        case 2: Block<M, 2>(xr, in, v, p, groups, n, yr, out); break;
        case 3: Block<M, 3>(xr, in, v, p, groups, n, yr, out); break;
        case 4: Block<M, 4>(xr, in, v, p, groups, n, yr, out); break;
        case 5: Block<M, 5>(xr, in, v, p, groups, n, yr, out); break;
        case 6: Block<M, 6>(xr, in, v, p, groups, n, yr, out); break;
        case 7: Block<M, 7>(xr, in, v, p, groups, n, yr, out); break;
        default: Block<M, 8>(xr, in, v, p, groups, n, yr, out); break;
      }
    }
  }
}

ffi::Error NmMatmulImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> values, ffi::Buffer<ffi::U8> positions,
                        ffi::ResultBuffer<ffi::F32> y, int64_t m) {
  auto xd = x.dimensions(), vd = values.dimensions();
  if (xd.size() != 2 || vd.size() != 4 || vd[3] != kLanes ||
      positions.element_count() != values.element_count()) {
    return ffi::Error::InvalidArgument("nm_matmul: x (rows, in), values and positions (out/16, in/M, N, 16)");
  }
  const int64_t rows = xd[0], in = xd[1], out = vd[0] * kLanes, n = vd[2];
  if (vd[1] * m != in) return ffi::Error::InvalidArgument("nm_matmul: in is not (in/M) * M");
  const float* xp = x.typed_data();
  const float* vp = values.typed_data();
  const uint8_t* pp = positions.typed_data();
  float* yp = y->typed_data();
  switch (m) {
    case 2: Rows<2>(xp, rows, in, vp, pp, n, yp, out); break;
    case 4: Rows<4>(xp, rows, in, vp, pp, n, yp, out); break;
    case 8: Rows<8>(xp, rows, in, vp, pp, n, yp, out); break;
    case 16: Rows<16>(xp, rows, in, vp, pp, n, yp, out); break;
    case 32: Rows<32>(xp, rows, in, vp, pp, n, yp, out); break;
    case 64: Rows<64>(xp, rows, in, vp, pp, n, yp, out); break;
    case 128: Rows<128>(xp, rows, in, vp, pp, n, yp, out); break;
    default: return ffi::Error::InvalidArgument("nm_matmul: M must be a power of two from 2 to 128");
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(PgfNmMatmul, NmMatmulImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::U8>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("m"));
