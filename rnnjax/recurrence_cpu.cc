// Fused CPU kernels for the Keras LSTM and GRU (reset_after=True) recurrences, called from JAX
// as XLA FFI custom calls (see rnnjax/fused.py, which compiles this file on first use).
//
// Why: XLA:CPU runs one timestep of a scanned cell as a few dozen tiny kernels on [batch, units]
// arrays, and that per-kernel cost, not arithmetic, bounds small recurrent models. Here a whole
// sequence is one loop per batch row, forward and backward.
//
// Layout is batch-major, as the layer produces it: x-projections [B, T, G*U], outputs [B, T, U].
// Rows are independent, so rows are split over XLA's intra-op thread pool and the result does not
// depend on the split. Only the recurrence runs here: the input projection x @ W + b, the weight
// gradients (one einsum over all timesteps) and everything else stay in XLA.

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <type_traits>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// exp(x): Cody-Waite reduction by ln 2 and a degree-5 polynomial (the Cephes expf coefficients),
// about 1 ulp on the clamped range. Branch-free, so GCC vectorises every loop that calls it
// without -ffast-math (which would also license rewrites we do not want). NaN stays NaN.
#define RNNJAX_INLINE inline __attribute__((always_inline))

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

// Both activations in one form, so a whole LSTM gate row [i f c o] is one vector loop:
// sigmoid(x) = 1 / (1 + exp(-x)) and tanh(x) = 2 / (1 + exp(-2x)) - 1, i.e.
// act(x) = scale / (1 + exp(-scale * x)) + offset with (scale, offset) (1, 0) or (2, -1).
struct GateActivations {
  std::vector<float> scale, offset;

  // LSTM: sigmoid on i, f, o; tanh on the candidate c.
  explicit GateActivations(int64_t units) : scale(4 * units, 1.0f), offset(4 * units, 0.0f) {
    std::fill_n(scale.begin() + 2 * units, units, 2.0f);
    std::fill_n(offset.begin() + 2 * units, units, -1.0f);
  }

  RNNJAX_INLINE void Apply(float* __restrict z, int64_t width) const {
    const float* __restrict k = scale.data();
    const float* __restrict o = offset.data();
    #pragma omp simd
    for (int64_t j = 0; j < width; ++j) z[j] = k[j] / (1.0f + Exp(-k[j] * z[j])) + o[j];
  }
};

RNNJAX_INLINE void SigmoidInPlace(float* __restrict v, int64_t n) {
  #pragma omp simd
  for (int64_t j = 0; j < n; ++j) v[j] = Sigmoid(v[j]);
}

RNNJAX_INLINE void TanhInPlace(float* __restrict v, int64_t n) {
  #pragma omp simd
  for (int64_t j = 0; j < n; ++j) v[j] = Tanh(v[j]);
}

// out[0:width] = bias + h[0:units] @ matrix[units, width]  (bias may be null).
RNNJAX_INLINE void RowTimesMatrix(const float* __restrict h, const float* __restrict matrix,
                                  const float* __restrict bias, int64_t units, int64_t width,
                                  float* __restrict out) {
  if (bias != nullptr) {
    std::copy(bias, bias + width, out);
  } else {
    std::fill(out, out + width, 0.0f);
  }
  for (int64_t k = 0; k < units; ++k) {
    const float hk = h[k];
    const float* row = matrix + k * width;
    #pragma omp simd
    for (int64_t j = 0; j < width; ++j) out[j] += hk * row[j];
  }
}

// out[0:units] += d[0:width] @ transposed[width, units], i.e. d @ matrix^T.
RNNJAX_INLINE void RowTimesTransposed(const float* __restrict d,
                                      const float* __restrict transposed, int64_t units,
                                      int64_t width, float* __restrict out) {
  for (int64_t j = 0; j < width; ++j) {
    const float dj = d[j];
    const float* row = transposed + j * units;
    #pragma omp simd
    for (int64_t k = 0; k < units; ++k) out[k] += dj * row[k];
  }
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

// The sizes every kernel works with: `batch` rows (leading axes x batch), `time` steps, `units`
// (the last axis is gates x units) and `models` weight sets, `rows_per_model` rows each.
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

template <typename Dims>
bool IsSequenceOfGates(const Dims& dims, int64_t gates) {
  return dims.size() >= 3 && dims.back() % gates == 0;
}

// Each of `count` [rows, cols] matrices transposed to [cols, rows], in place order.
std::vector<float> TransposeEach(const float* matrices, int64_t count, int64_t rows,
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
void ForEachRowChunk(ffi::ThreadPool& pool, int64_t rows,
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

// ---------------------------------------------------------------------------------------------
// LSTM, gates [i, f, c, o]:  z = xw_t + h @ R;  c' = sf * c + si * tanh(z_c);  h' = so * tanh(c').

ffi::Error LstmForward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> xw, ffi::Buffer<ffi::F32> r,
                       ffi::Buffer<ffi::F32> h0, ffi::Buffer<ffi::F32> c0,
                       ffi::ResultBuffer<ffi::F32> hs, ffi::ResultBuffer<ffi::F32> cs,
                       ffi::ResultBuffer<ffi::F32> gates, ffi::ResultBuffer<ffi::F32> tanh_cs) {
  if (!IsSequenceOfGates(xw.dimensions(), 4)) {
    return ffi::Error::InvalidArgument("lstm forward: xw must be [batch, time, 4 * units]");
  }
  const Geometry shape(xw.dimensions(), r.dimensions(), 4);
  const int64_t batch = shape.batch, time = shape.time, runtime_units = shape.units;
  const int64_t rows_per_model = shape.rows_per_model;
  const float* xw_data = xw.typed_data();
  ForEachRowChunk(pool, batch, [&](int64_t first, int64_t end) {
    WithUnits(runtime_units, [&](auto units_constant) {
      const int64_t units = units_constant, width = 4 * units;
      const GateActivations activations(units);
      // Time outermost: consecutive iterations are different rows, independent of each other,
      // so the CPU overlaps their dependency chains (one row alone is latency-bound).
      const int64_t rows = end - first;
      std::vector<float> h_rows(rows * units), c_rows(rows * units);
      std::copy_n(h0.typed_data() + first * units, rows * units, h_rows.data());
      std::copy_n(c0.typed_data() + first * units, rows * units, c_rows.data());
      for (int64_t t = 0; t < time; ++t) {
        for (int64_t b = first; b < end; ++b) {
          float* __restrict h = h_rows.data() + (b - first) * units;
          float* __restrict c = c_rows.data() + (b - first) * units;
          const int64_t step = b * time + t;
          float* a = gates->typed_data() + step * width;
          const float* kernel = r.typed_data() + (b / rows_per_model) * units * width;
          RowTimesMatrix(h, kernel, xw_data + step * width, units, width, a);
          activations.Apply(a, width);
          float* __restrict c_out = cs->typed_data() + step * units;
          float* __restrict tc_out = tanh_cs->typed_data() + step * units;
          float* __restrict h_out = hs->typed_data() + step * units;
          #pragma omp simd
          for (int64_t u = 0; u < units; ++u) {
            c[u] = a[units + u] * c[u] + a[u] * a[2 * units + u];
            c_out[u] = c[u];
          }
          #pragma omp simd
          for (int64_t u = 0; u < units; ++u) tc_out[u] = Tanh(c[u]);
          #pragma omp simd
          for (int64_t u = 0; u < units; ++u) {
            h[u] = a[3 * units + u] * tc_out[u];
            h_out[u] = h[u];
          }
        }
      }
    });
  });
  return ffi::Error::Success();
}

// Gradients of the pre-activations dz [B, T, 4U] and of the initial states, given the gradients
// of every output (dhs; the final h is hs[:, -1]) and of the final cell state (dc_last).
ffi::Error LstmBackward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> dhs,
                        ffi::Buffer<ffi::F32> dc_last, ffi::Buffer<ffi::F32> gates,
                        ffi::Buffer<ffi::F32> cs, ffi::Buffer<ffi::F32> tanh_cs,
                        ffi::Buffer<ffi::F32> c0, ffi::Buffer<ffi::F32> r,
                        ffi::ResultBuffer<ffi::F32> dz, ffi::ResultBuffer<ffi::F32> dh0,
                        ffi::ResultBuffer<ffi::F32> dc0) {
  const Geometry shape(gates.dimensions(), r.dimensions(), 4);
  const int64_t batch = shape.batch, time = shape.time, runtime_units = shape.units;
  const int64_t rows_per_model = shape.rows_per_model;
  const std::vector<float> r_t =
      TransposeEach(r.typed_data(), shape.models, runtime_units, 4 * runtime_units);
  ForEachRowChunk(pool, batch, [&](int64_t first, int64_t end) {
    WithUnits(runtime_units, [&](auto units_constant) {
      const int64_t units = units_constant, width = 4 * units;
      const int64_t rows = end - first;
      std::vector<float> dh_rows(rows * units, 0.0f), dc_rows(rows * units);
      std::copy_n(dc_last.typed_data() + first * units, rows * units, dc_rows.data());
      for (int64_t t = time - 1; t >= 0; --t) {
        for (int64_t b = first; b < end; ++b) {
          float* __restrict dh = dh_rows.data() + (b - first) * units;
          float* __restrict dc = dc_rows.data() + (b - first) * units;
          const int64_t step = b * time + t;
          const float* a = gates.typed_data() + step * width;
          const float* tc = tanh_cs.typed_data() + step * units;
          const float* c_prev =
              t > 0 ? cs.typed_data() + (step - 1) * units : c0.typed_data() + b * units;
          const float* dh_out = dhs.typed_data() + step * units;
          float* __restrict d = dz->typed_data() + step * width;
          #pragma omp simd
          for (int64_t u = 0; u < units; ++u) {
            const float i = a[u], f = a[units + u], g = a[2 * units + u], o = a[3 * units + u];
            const float dh_u = dh[u] + dh_out[u];
            const float dc_u = dc[u] + dh_u * o * (1.0f - tc[u] * tc[u]);
            d[u] = dc_u * g * i * (1.0f - i);
            d[units + u] = dc_u * c_prev[u] * f * (1.0f - f);
            d[2 * units + u] = dc_u * i * (1.0f - g * g);
            d[3 * units + u] = dh_u * tc[u] * o * (1.0f - o);
            dc[u] = dc_u * f;
          }
          std::fill(dh, dh + units, 0.0f);
          const float* kernel_t = r_t.data() + (b / rows_per_model) * units * width;
          RowTimesTransposed(d, kernel_t, units, width, dh);
        }
      }
      std::copy_n(dh_rows.data(), rows * units, dh0->typed_data() + first * units);
      std::copy_n(dc_rows.data(), rows * units, dc0->typed_data() + first * units);
    });
  });
  return ffi::Error::Success();
}

// ---------------------------------------------------------------------------------------------
// GRU, reset_after=True, gates [z, r, h]:  hr = h @ R + b_rec;  z, r = sigmoid(xw + hr)[z, r];
// hh = tanh(xw_h + r * hr_h);  h' = z * h + (1 - z) * hh.

ffi::Error GruForward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> xw, ffi::Buffer<ffi::F32> r,
                      ffi::Buffer<ffi::F32> recurrent_bias, ffi::Buffer<ffi::F32> h0,
                      ffi::ResultBuffer<ffi::F32> hs, ffi::ResultBuffer<ffi::F32> gates,
                      ffi::ResultBuffer<ffi::F32> hr_candidate) {
  if (!IsSequenceOfGates(xw.dimensions(), 3)) {
    return ffi::Error::InvalidArgument("gru forward: xw must be [batch, time, 3 * units]");
  }
  const Geometry shape(xw.dimensions(), r.dimensions(), 3);
  const int64_t batch = shape.batch, time = shape.time, runtime_units = shape.units;
  const int64_t rows_per_model = shape.rows_per_model;
  ForEachRowChunk(pool, batch, [&](int64_t first, int64_t end) {
    WithUnits(runtime_units, [&](auto units_constant) {
      const int64_t units = units_constant, width = 3 * units;
      const int64_t rows = end - first;
      std::vector<float> h_rows(rows * units), hr(width);
      std::copy_n(h0.typed_data() + first * units, rows * units, h_rows.data());
      for (int64_t t = 0; t < time; ++t) {
        for (int64_t b = first; b < end; ++b) {
          float* __restrict h = h_rows.data() + (b - first) * units;
          const int64_t step = b * time + t;
          const float* x = xw.typed_data() + step * width;
          float* __restrict a = gates->typed_data() + step * width;
          const int64_t model = b / rows_per_model;
          RowTimesMatrix(h, r.typed_data() + model * units * width,
                         recurrent_bias.typed_data() + model * width, units, width, hr.data());
          #pragma omp simd
          for (int64_t j = 0; j < 2 * units; ++j) a[j] = x[j] + hr[j];
          SigmoidInPlace(a, 2 * units);
          #pragma omp simd
          for (int64_t u = 0; u < units; ++u) {
            a[2 * units + u] = x[2 * units + u] + a[units + u] * hr[2 * units + u];
          }
          TanhInPlace(a + 2 * units, units);
          std::copy_n(hr.data() + 2 * units, units, hr_candidate->typed_data() + step * units);
          float* __restrict h_out = hs->typed_data() + step * units;
          #pragma omp simd
          for (int64_t u = 0; u < units; ++u) {
            const float z = a[u];
            h[u] = z * h[u] + (1.0f - z) * a[2 * units + u];
            h_out[u] = h[u];
          }
        }
      }
    });
  });
  return ffi::Error::Success();
}

// Gradients of xw (dxw [B, T, 3U]), of hr = h @ R + b_rec (dhr [B, T, 3U]) and of h0.
ffi::Error GruBackward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> dhs,
                       ffi::Buffer<ffi::F32> gates, ffi::Buffer<ffi::F32> hr_candidate,
                       ffi::Buffer<ffi::F32> hs, ffi::Buffer<ffi::F32> h0,
                       ffi::Buffer<ffi::F32> r, ffi::ResultBuffer<ffi::F32> dxw,
                       ffi::ResultBuffer<ffi::F32> dhr, ffi::ResultBuffer<ffi::F32> dh0) {
  const Geometry shape(gates.dimensions(), r.dimensions(), 3);
  const int64_t batch = shape.batch, time = shape.time, runtime_units = shape.units;
  const int64_t rows_per_model = shape.rows_per_model;
  const std::vector<float> r_t =
      TransposeEach(r.typed_data(), shape.models, runtime_units, 3 * runtime_units);
  ForEachRowChunk(pool, batch, [&](int64_t first, int64_t end) {
    WithUnits(runtime_units, [&](auto units_constant) {
      const int64_t units = units_constant, width = 3 * units;
      const int64_t rows = end - first;
      std::vector<float> dh_rows(rows * units, 0.0f);
      for (int64_t t = time - 1; t >= 0; --t) {
        for (int64_t b = first; b < end; ++b) {
          float* __restrict dh = dh_rows.data() + (b - first) * units;
          const int64_t step = b * time + t;
          const float* a = gates.typed_data() + step * width;
          const float* hr_h = hr_candidate.typed_data() + step * units;
          const float* h_prev =
              t > 0 ? hs.typed_data() + (step - 1) * units : h0.typed_data() + b * units;
          const float* dh_out = dhs.typed_data() + step * units;
          float* __restrict dx = dxw->typed_data() + step * width;
          float* __restrict dr = dhr->typed_data() + step * width;
          #pragma omp simd
          for (int64_t u = 0; u < units; ++u) {
            const float z = a[u], reset = a[units + u], hh = a[2 * units + u];
            const float dh_u = dh[u] + dh_out[u];
            const float dz = dh_u * (h_prev[u] - hh) * z * (1.0f - z);
            const float dcandidate = dh_u * (1.0f - z) * (1.0f - hh * hh);
            const float dreset = dcandidate * hr_h[u] * reset * (1.0f - reset);
            dx[u] = dr[u] = dz;
            dx[units + u] = dr[units + u] = dreset;
            dx[2 * units + u] = dcandidate;
            dr[2 * units + u] = dcandidate * reset;
            dh[u] = dh_u * z;
          }
          const float* kernel_t = r_t.data() + (b / rows_per_model) * units * width;
          RowTimesTransposed(dr, kernel_t, units, width, dh);
        }
      }
      std::copy_n(dh_rows.data(), rows * units, dh0->typed_data() + first * units);
    });
  });
  return ffi::Error::Success();
}

}  // namespace

using F32Buffer = ffi::Buffer<ffi::F32>;
using F32Result = ffi::ResultBuffer<ffi::F32>;

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnjaxLstmForward, LstmForward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32Buffer>()  // xw [B, T, 4U]
                                  .Arg<F32Buffer>()  // recurrent kernel [U, 4U]
                                  .Arg<F32Buffer>()  // h0 [B, U]
                                  .Arg<F32Buffer>()  // c0 [B, U]
                                  .Ret<F32Buffer>()  // hs [B, T, U]
                                  .Ret<F32Buffer>()  // cs [B, T, U]
                                  .Ret<F32Buffer>()  // activated gates [B, T, 4U]
                                  .Ret<F32Buffer>()  // tanh(cs) [B, T, U]
);

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnjaxLstmBackward, LstmBackward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32Buffer>()  // dhs [B, T, U]
                                  .Arg<F32Buffer>()  // dc_last [B, U]
                                  .Arg<F32Buffer>()  // gates [B, T, 4U]
                                  .Arg<F32Buffer>()  // cs [B, T, U]
                                  .Arg<F32Buffer>()  // tanh(cs) [B, T, U]
                                  .Arg<F32Buffer>()  // c0 [B, U]
                                  .Arg<F32Buffer>()  // recurrent kernel [U, 4U]
                                  .Ret<F32Buffer>()  // dz [B, T, 4U]
                                  .Ret<F32Buffer>()  // dh0 [B, U]
                                  .Ret<F32Buffer>()  // dc0 [B, U]
);

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnjaxGruForward, GruForward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32Buffer>()  // xw [B, T, 3U]
                                  .Arg<F32Buffer>()  // recurrent kernel [U, 3U]
                                  .Arg<F32Buffer>()  // recurrent bias [3U]
                                  .Arg<F32Buffer>()  // h0 [B, U]
                                  .Ret<F32Buffer>()  // hs [B, T, U]
                                  .Ret<F32Buffer>()  // gates z, r, hh [B, T, 3U]
                                  .Ret<F32Buffer>()  // (h @ R + b_rec)[h part] [B, T, U]
);

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnjaxGruBackward, GruBackward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32Buffer>()  // dhs [B, T, U]
                                  .Arg<F32Buffer>()  // gates [B, T, 3U]
                                  .Arg<F32Buffer>()  // hr h part [B, T, U]
                                  .Arg<F32Buffer>()  // hs [B, T, U]
                                  .Arg<F32Buffer>()  // h0 [B, U]
                                  .Arg<F32Buffer>()  // recurrent kernel [U, 3U]
                                  .Ret<F32Buffer>()  // dxw [B, T, 3U]
                                  .Ret<F32Buffer>()  // dhr [B, T, 3U]
                                  .Ret<F32Buffer>()  // dh0 [B, U]
);
