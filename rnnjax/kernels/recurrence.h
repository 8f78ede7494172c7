// What the fused CPU recurrences (lstm.cc, gru.cc, simple_rnn.cc) share: the activations, the
// blocks of rows and their products with a matrix, the sizes of a call, the optional padding and
// recurrent-dropout masks, and the split of rows over XLA's thread pool. rnnjax/fused.py compiles
// the kernels on first use and calls them as XLA FFI custom calls.
//
// Why kernels: XLA:CPU runs one timestep of a scanned cell as a few dozen tiny kernels on
// [batch, units] arrays, and that per-kernel cost, not arithmetic, bounds small recurrent models.
// Here a whole sequence is one loop over the batch's rows, forward and backward.
//
// Layout is batch-major, as the layer produces it: x-projections [B, T, G*U], outputs [B, T, U].
// The time loop is outermost and blocks of rows inside it (kBlockRows below): one row alone is
// latency-bound, a block's rows are independent work the CPU overlaps. Rows are split over XLA's
// intra-op thread pool; results do not depend on the split or the blocks. Only the recurrence
// runs here: the input projection x @ W + b, the weight gradients (one einsum over all
// timesteps) and everything else stay in XLA.
//
// Optional inputs are buffers that are empty when absent:
// * mask [B, T] bool, False at padding: the state is carried unchanged through that step and the
//   step's output repeats the previous output (Keras' mask_zero); the backward pass passes the
//   state gradient straight through it and gives the step's pre-activations zero gradient.
// * recurrent dropout masks [B, G, U] (G masks per row, one per gate; Keras' implementation 1):
//   gate g multiplies the previous state by mask g before its recurrent matmul.

#ifndef RNNJAX_KERNELS_RECURRENCE_H_
#define RNNJAX_KERNELS_RECURRENCE_H_

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace rnnjax {

namespace ffi = xla::ffi;

using F32Buffer = ffi::Buffer<ffi::F32>;
using F32Result = ffi::ResultBuffer<ffi::F32>;
using MaskBuffer = ffi::Buffer<ffi::PRED>;

#define RNNJAX_INLINE inline __attribute__((always_inline))

// exp(x): Cody-Waite reduction by ln 2 and a degree-5 polynomial (the Cephes expf coefficients),
// about 1 ulp on the clamped range. Branch-free, so GCC vectorises every loop that calls it
// without -ffast-math (which would also license rewrites we do not want). NaN stays NaN.
RNNJAX_INLINE float Exp(float x) {
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  const float kShifter = 12582912.0f;  // 1.5 * 2^23: adding and subtracting it rounds to integer
  const float n = (x * 1.44269504088896341f + kShifter) - kShifter;
  float r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return y * scale;
}

RNNJAX_INLINE float Sigmoid(float x) { return 1.0f / (1.0f + Exp(-x)); }

RNNJAX_INLINE float Tanh(float x) { return 1.0f - 2.0f / (Exp(2.0f * x) + 1.0f); }

RNNJAX_INLINE void SigmoidInPlace(float* __restrict v, int64_t n) {
  #pragma omp simd
  for (int64_t j = 0; j < n; ++j) v[j] = Sigmoid(v[j]);
}

RNNJAX_INLINE void TanhInPlace(float* __restrict v, int64_t n) {
  #pragma omp simd
  for (int64_t j = 0; j < n; ++j) v[j] = Tanh(v[j]);
}

// Calls body(units) with units a compile-time constant for the common sizes, so the short
// per-row loops compile to straight vector code; other sizes run the same code with runtime loops.
template <typename Body>
void WithUnits(int64_t units, Body&& body) {
  switch (units) {
    case 8: return body(std::integral_constant<int64_t, 8>{});
    case 16: return body(std::integral_constant<int64_t, 16>{});
    case 32: return body(std::integral_constant<int64_t, 32>{});
    case 64: return body(std::integral_constant<int64_t, 64>{});
    case 128: return body(std::integral_constant<int64_t, 128>{});
    default: return body(units);
  }
}

// Under jax.vmap (K models at once) every operand gains the same leading axes, so a buffer is
// [..., B, T, G] and the weights [..., U, G]: the kernels see leading-axes x B rows, and row b
// uses the weights of model b / (rows per model).
template <typename Dims>
int64_t Product(const Dims& dims, size_t trailing) {
  int64_t product = 1;
  for (size_t i = 0; i + trailing < dims.size(); ++i) product *= dims[i];
  return product;
}

template <typename Dims>
bool IsSequenceOfGates(const Dims& dims, int64_t gates) {
  return dims.size() >= 3 && dims.back() % gates == 0;
}

// The sizes every kernel works with: `batch` rows (leading axes x batch), `time` steps, `units`
// (the last axis of `dims` is gates x units) and `models` weight sets, `rows_per_model` rows each.
struct Geometry {
  int64_t batch, time, units, models, rows_per_model;

  template <typename Dims, typename WeightDims>
  Geometry(const Dims& dims, const WeightDims& weight_dims, int64_t gates)
      : batch(Product(dims, 2)),
        time(dims[dims.size() - 2]),
        units(dims.back() / gates),
        models(Product(weight_dims, 2)),
        rows_per_model(batch / models) {}
};

// The optional padding mask: Keeps(row, t) is false where step t of the row is padding.
class StepMask {
 public:
  StepMask(const MaskBuffer& mask, const Geometry& shape)
      : data_(mask.element_count() ? mask.typed_data() : nullptr),
        time_(shape.time),
        valid_(mask.element_count() == 0 ||
               static_cast<int64_t>(mask.element_count()) == shape.batch * shape.time) {}

  bool valid() const { return valid_; }
  RNNJAX_INLINE bool Keeps(int64_t row, int64_t t) const {
    return data_ == nullptr || data_[row * time_ + t];
  }

 private:
  const bool* data_;
  int64_t time_;
  bool valid_;
};


// The optional recurrent dropout masks, [rows, gates, units]: Row(b) is row b's masks, or null.
class DropoutMasks {
 public:
  DropoutMasks(const F32Buffer& masks, const Geometry& shape, int64_t gates)
      : data_(masks.element_count() ? masks.typed_data() : nullptr),
        stride_(gates * shape.units),
        valid_(masks.element_count() == 0 ||
               static_cast<int64_t>(masks.element_count()) == shape.batch * gates * shape.units) {}

  bool valid() const { return valid_; }
  bool present() const { return data_ != nullptr; }
  RNNJAX_INLINE const float* Row(int64_t row) const {
    return data_ == nullptr ? nullptr : data_ + row * stride_;
  }

 private:
  const float* data_;
  int64_t stride_;
  bool valid_;
};

// Checks the optional inputs' sizes against the call's geometry.
inline ffi::Error CheckOptionalInputs(const char* kernel, const StepMask& mask,
                                      const DropoutMasks& dropout) {
  if (!mask.valid()) {
    return ffi::Error::InvalidArgument(std::string(kernel) + ": mask must be empty or [B, T]");
  }
  if (!dropout.valid()) {
    return ffi::Error::InvalidArgument(std::string(kernel) +
                                       ": recurrent masks must be empty or [B, gates, units]");
  }
  return ffi::Error::Success();
}

// Rows are processed in blocks of kBlockRows: each phase of a timestep (the recurrent product, the
// activations, the state update) runs over the whole block before the next starts. One row's step
// is a long dependent chain (products, exp, divide, exp); a block gives the CPU kBlockRows
// independent chains to overlap, and each element of the recurrent matrix read serves every row
// of the block. Blocks never span two weight sets (models under vmap).
constexpr int64_t kBlockRows = 8;

// Calls block(first_row, count) for consecutive blocks of at most kBlockRows rows covering
// [first, end), cut where the weight set changes (every rows_per_model rows).
template <typename Body>
RNNJAX_INLINE void ForEachBlock(int64_t first, int64_t end, int64_t rows_per_model, Body&& block) {
  for (int64_t b0 = first; b0 < end;) {
    const int64_t model_end = (b0 / rows_per_model + 1) * rows_per_model;
    const int64_t count = std::min({kBlockRows, end - b0, model_end - b0});
    block(b0, count);
    b0 += count;
  }
}

// Rows b0 .. b0 + count of a [rows, time, width] buffer at step t, as a block [count, width]:
// LoadStep copies them into the block, StoreStep copies the block back.
RNNJAX_INLINE void LoadStep(const float* buffer, int64_t b0, int64_t count, int64_t time,
                            int64_t t, int64_t width, float* block) {
  for (int64_t l = 0; l < count; ++l) {
    std::copy_n(buffer + ((b0 + l) * time + t) * width, width, block + l * width);
  }
}

RNNJAX_INLINE void StoreStep(const float* block, int64_t b0, int64_t count, int64_t time,
                             int64_t t, int64_t width, float* buffer) {
  for (int64_t l = 0; l < count; ++l) {
    std::copy_n(block + l * width, width, buffer + ((b0 + l) * time + t) * width);
  }
}

// kColumns columns of BlockProduct with the kBlockRows x kColumns sums held in registers; the
// first `skip` columns are summed but not stored.
template <int64_t kColumns>
RNNJAX_INLINE void BlockProductColumns(const float* __restrict in, int64_t in_stride,
                                       int64_t inner, const float* __restrict matrix,
                                       int64_t matrix_stride, int64_t count, int64_t skip,
                                       float* __restrict out, int64_t out_stride) {
  float sums[kBlockRows][kColumns];
  for (int64_t l = 0; l < kBlockRows; ++l) {
    #pragma omp simd
    for (int64_t j = 0; j < kColumns; ++j) sums[l][j] = out[l * out_stride + j];
  }
  for (int64_t k = 0; k < inner; ++k) {
    const float* __restrict row = matrix + k * matrix_stride;
    #pragma GCC unroll 8
    for (int64_t l = 0; l < kBlockRows; ++l) {
      const float v = in[l * in_stride + k];
      #pragma omp simd
      for (int64_t j = 0; j < kColumns; ++j) sums[l][j] += v * row[j];
    }
  }
  for (int64_t l = 0; l < count; ++l) {
    for (int64_t j = skip; j < kColumns; ++j) out[l * out_stride + j] = sums[l][j];
  }
}

// For the rows l of a block: out[l, 0:columns] += in[l, 0:inner] @ matrix[0:inner, 0:columns],
// summing over k in order (the same rounding as one row at a time). Row l of `in` starts at
// in + l * in_stride, of `out` at out + l * out_stride, row k of the matrix at matrix + k *
// matrix_stride. All kBlockRows rows of `in` and `out` are read (rows past `count` must exist and
// are ignored); only the first `count` rows of `out` are written.
RNNJAX_INLINE void BlockProduct(const float* __restrict in, int64_t in_stride, int64_t inner,
                                const float* __restrict matrix, int64_t matrix_stride,
                                int64_t columns, int64_t count, float* __restrict out,
                                int64_t out_stride) {
  int64_t j = 0;
  for (; j + 16 <= columns; j += 16) {
    BlockProductColumns<16>(in, in_stride, inner, matrix + j, matrix_stride, count, 0, out + j,
                            out_stride);
  }
  if (j + 8 <= columns) {
    BlockProductColumns<8>(in, in_stride, inner, matrix + j, matrix_stride, count, 0, out + j,
                           out_stride);
    j += 8;
  }
  if (j == columns) return;
  if (columns >= 8) {
    // The last 8 columns; those already done are summed again but not stored. No read past
    // the last column, no scalar remainder.
    const int64_t last = columns - 8;
    BlockProductColumns<8>(in, in_stride, inner, matrix + last, matrix_stride, count, j - last,
                           out + last, out_stride);
    return;
  }
  for (int64_t l = 0; l < count; ++l) {
    float* __restrict o = out + l * out_stride + j;
    for (int64_t k = 0; k < inner; ++k) {
      const float v = in[l * in_stride + k];
      const float* __restrict row = matrix + k * matrix_stride + j;
      #pragma omp simd
      for (int64_t c = 0; c < columns - j; ++c) o[c] += v * row[c];
    }
  }
}

// The recurrent matmul of a block (rows b0 .. b0 + count of the batch, states h [kBlockRows,
// units]) for `gates` gates of `units` columns starting at gate `first_gate` of the [units,
// width] matrix: out[l, 0:gates * units] += h'_l @ matrix[:, first_gate * units:]. Without
// masks h' = h; with them gate g uses h * mask g (Keras' implementation 1). `scratch` holds
// kBlockRows * units floats.
RNNJAX_INLINE void AddRecurrentProduct(const float* __restrict h, const DropoutMasks& dropout,
                                       int64_t b0, int64_t count, const float* matrix,
                                       int64_t units, int64_t width, int64_t first_gate,
                                       int64_t gates, float* __restrict scratch, float* out,
                                       int64_t out_stride) {
  const float* gate_columns = matrix + first_gate * units;
  if (!dropout.present()) {
    BlockProduct(h, units, units, gate_columns, width, gates * units, count, out, out_stride);
    return;
  }
  std::fill_n(scratch, kBlockRows * units, 0.0f);
  for (int64_t g = 0; g < gates; ++g) {
    for (int64_t l = 0; l < count; ++l) {
      const float* mask = dropout.Row(b0 + l) + (first_gate + g) * units;
      #pragma omp simd
      for (int64_t k = 0; k < units; ++k) scratch[l * units + k] = h[l * units + k] * mask[k];
    }
    BlockProduct(scratch, units, units, gate_columns + g * units, width, units, count,
                 out + g * units, out_stride);
  }
}

// The transpose of AddRecurrentProduct: out[l, 0:units] += d_l @ matrix[:, first_gate * units:
// (first_gate + gates) * units]^T, read from `transposed` = matrix^T [width, units]; row l of d
// (gate first_gate's columns first) at d + l * d_stride. With masks gate g's share is multiplied
// by mask g. `scratch` holds kBlockRows * units floats.
RNNJAX_INLINE void AddTransposedProduct(const float* __restrict d, int64_t d_stride,
                                        const DropoutMasks& dropout, int64_t b0, int64_t count,
                                        const float* transposed, int64_t units,
                                        int64_t first_gate, int64_t gates,
                                        float* __restrict scratch, float* out) {
  const float* gate_rows = transposed + first_gate * units * units;
  if (!dropout.present()) {
    BlockProduct(d, d_stride, gates * units, gate_rows, units, units, count, out, units);
    return;
  }
  for (int64_t g = 0; g < gates; ++g) {
    std::fill_n(scratch, kBlockRows * units, 0.0f);
    BlockProduct(d + g * units, d_stride, units, gate_rows + g * units * units, units, units,
                 count, scratch, units);
    for (int64_t l = 0; l < count; ++l) {
      const float* mask = dropout.Row(b0 + l) + (first_gate + g) * units;
      #pragma omp simd
      for (int64_t k = 0; k < units; ++k) out[l * units + k] += mask[k] * scratch[l * units + k];
    }
  }
}

// Each of `count` [rows, cols] matrices transposed to [cols, rows], in place order.
inline std::vector<float> TransposeEach(const float* matrices, int64_t count, int64_t rows,
                                        int64_t cols) {
  std::vector<float> out(count * rows * cols);
  for (int64_t m = 0; m < count; ++m) {
    const float* in = matrices + m * rows * cols;
    float* to = out.data() + m * rows * cols;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) to[c * rows + r] = in[r * cols + c];
  }
  return out;
}

// Runs work(first_row, end_row) over [0, rows) in chunks, on the calling thread and on XLA's
// intra-op pool. The caller also takes chunks, so it never waits on a task that has not started
// (no deadlock when the pool is busy or has one thread); tasks that start after all chunks are
// taken return at once, and the shared state outlives them.
inline void ForEachRowChunk(ffi::ThreadPool& pool, int64_t rows,
                            const std::function<void(int64_t, int64_t)>& work) {
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  const int64_t chunks = std::min<int64_t>(rows, threads);
  if (chunks <= 1) {
    work(0, rows);
    return;
  }
  struct State {
    std::atomic<int64_t> next{0};
    int64_t done = 0;
    std::mutex mutex;
    std::condition_variable all_done;
  };
  auto state = std::make_shared<State>();
  const auto* work_ptr = &work;
  auto run_chunks = [state, work_ptr, rows, chunks]() {
    for (int64_t chunk; (chunk = state->next.fetch_add(1)) < chunks;) {
      (*work_ptr)(chunk * rows / chunks, (chunk + 1) * rows / chunks);
      std::lock_guard<std::mutex> lock(state->mutex);
      if (++state->done == chunks) state->all_done.notify_all();
    }
  };
  for (int64_t i = 1; i < chunks; ++i) {
    auto task = run_chunks;
    pool.Schedule(std::move(task));
  }
  run_chunks();
  std::unique_lock<std::mutex> lock(state->mutex);
  state->all_done.wait(lock, [&] { return state->done == chunks; });
}

}  // namespace rnnjax

#endif  // RNNJAX_KERNELS_RECURRENCE_H_
