// The Keras GRU recurrences, gates [z, r, h], h' = z * h + (1 - z) * hh, in both variants:
// * reset_after=True:  hr = h @ R + b_rec;  z, r = sigmoid(xw[z, r] + hr[z, r]);
//                      hh = tanh(xw_h + r * hr_h).
// * reset_after=False: z, r = sigmoid(xw[z, r] + h @ R[:, z, r]);  hh = tanh(xw_h + (r * h) @ R_h).
// Under recurrent dropout gate g uses h * mask_g in place of h (for reset_after=False, the
// candidate's r * (h * mask_h)). See recurrence.h for the layout, the masks and the thread split.

#include "recurrence.h"

namespace rnnjax {
namespace {

// Both variants' new state from a row's activated gates [z, r, hh]: h' = z * h + (1 - z) * hh.
RNNJAX_INLINE void UpdateState(const float* __restrict gates, int64_t units, float* __restrict h) {
  #pragma omp simd
  for (int64_t u = 0; u < units; ++u) {
    const float z = gates[u];
    h[u] = z * h[u] + (1.0f - z) * gates[2 * units + u];
  }
}

ffi::Error GruForward(ffi::ThreadPool pool, F32Buffer xw, F32Buffer r, F32Buffer recurrent_bias,
                      F32Buffer h0, MaskBuffer mask, F32Buffer recurrent_masks, F32Result hs,
                      F32Result gates, F32Result hr_candidate) {
  if (!IsSequenceOfGates(xw.dimensions(), 3)) {
    return ffi::Error::InvalidArgument("gru forward: xw must be [batch, time, 3 * units]");
  }
  const Geometry shape(xw.dimensions(), r.dimensions(), 3);
  const StepMask keep(mask, shape);
  const DropoutMasks dropout(recurrent_masks, shape, 3);
  if (auto error = CheckOptionalInputs("gru forward", keep, dropout); error.failure()) {
    return error;
  }
  const int64_t time = shape.time, rows_per_model = shape.rows_per_model;
  ForEachRowChunk(pool, shape.batch, [&](int64_t first, int64_t end) {
    WithUnits(shape.units, [&](auto units_constant) {
      const int64_t units = units_constant, width = 3 * units;
      const int64_t rows = end - first;
      // One block's worth of rows past the end: a block product reads kBlockRows states.
      std::vector<float> h_rows((rows + kBlockRows) * units, 0.0f);
      std::vector<float> hr(kBlockRows * width, 0.0f), a(kBlockRows * width);
      std::vector<float> h_new(kBlockRows * units), scratch(kBlockRows * units);
      std::copy_n(h0.typed_data() + first * units, rows * units, h_rows.data());
      for (int64_t t = 0; t < time; ++t) {
        ForEachBlock(first, end, rows_per_model, [&](int64_t b0, int64_t count) {
          float* __restrict h = h_rows.data() + (b0 - first) * units;
          const int64_t model = b0 / rows_per_model;
          const float* bias = recurrent_bias.typed_data() + model * width;
          for (int64_t l = 0; l < count; ++l) std::copy_n(bias, width, &hr[l * width]);
          AddRecurrentProduct(h, dropout, b0, count, r.typed_data() + model * units * width,
                              units, width, 0, 3, scratch.data(), hr.data(), width);
          for (int64_t l = 0; l < count; ++l) {
            const float* x = xw.typed_data() + ((b0 + l) * time + t) * width;
            float* __restrict a_l = &a[l * width];
            const float* hr_l = &hr[l * width];
            #pragma omp simd
            for (int64_t j = 0; j < 2 * units; ++j) a_l[j] = x[j] + hr_l[j];
            SigmoidInPlace(a_l, 2 * units);
            #pragma omp simd
            for (int64_t u = 0; u < units; ++u) {
              a_l[2 * units + u] = x[2 * units + u] + a_l[units + u] * hr_l[2 * units + u];
            }
          }
          for (int64_t l = 0; l < count; ++l) TanhInPlace(&a[l * width + 2 * units], units);
          for (int64_t l = 0; l < count; ++l) {
            const int64_t step = (b0 + l) * time + t;
            float* gates_out = gates->typed_data() + step * width;
            float* candidate_out = hr_candidate->typed_data() + step * units;
            float* h_out = hs->typed_data() + step * units;
            float* __restrict h_l = h + l * units;
            if (!keep.Keeps(b0 + l, t)) {
              std::fill_n(gates_out, width, 0.0f);
              std::fill_n(candidate_out, units, 0.0f);
              std::copy_n(h_l, units, h_out);
              continue;
            }
            const float* a_l = &a[l * width];
            UpdateState(a_l, units, h_l);
            std::copy_n(a_l, width, gates_out);
            std::copy_n(&hr[l * width + 2 * units], units, candidate_out);
            std::copy_n(h_l, units, h_out);
          }
        });
      }
    });
  });
  return ffi::Error::Success();
}

// Gradients of xw (dxw [B, T, 3U]), of hr = h @ R + b_rec (dhr [B, T, 3U]) and of h0.
ffi::Error GruBackward(ffi::ThreadPool pool, F32Buffer dhs, F32Buffer gates,
                       F32Buffer hr_candidate, F32Buffer hs, F32Buffer h0, F32Buffer r,
                       MaskBuffer mask, F32Buffer recurrent_masks, F32Result dxw, F32Result dhr,
                       F32Result dh0) {
  const Geometry shape(gates.dimensions(), r.dimensions(), 3);
  const StepMask keep(mask, shape);
  const DropoutMasks dropout(recurrent_masks, shape, 3);
  if (auto error = CheckOptionalInputs("gru backward", keep, dropout); error.failure()) {
    return error;
  }
  const int64_t time = shape.time, rows_per_model = shape.rows_per_model;
  const std::vector<float> r_t =
      TransposeEach(r.typed_data(), shape.models, shape.units, 3 * shape.units);
  ForEachRowChunk(pool, shape.batch, [&](int64_t first, int64_t end) {
    WithUnits(shape.units, [&](auto units_constant) {
      const int64_t units = units_constant, width = 3 * units;
      const int64_t rows = end - first;
      std::vector<float> dh_rows((rows + kBlockRows) * units, 0.0f);
      std::vector<float> dr(kBlockRows * width, 0.0f), scratch(kBlockRows * units);
      for (int64_t t = time - 1; t >= 0; --t) {
        ForEachBlock(first, end, rows_per_model, [&](int64_t b0, int64_t count) {
          float* __restrict dh = dh_rows.data() + (b0 - first) * units;
          for (int64_t l = 0; l < count; ++l) {
            const int64_t b = b0 + l, step = b * time + t;
            const float* dh_out = dhs.typed_data() + step * units;
            float* __restrict dx = dxw->typed_data() + step * width;
            float* __restrict dr_l = &dr[l * width];
            float* __restrict dh_l = dh + l * units;
            if (!keep.Keeps(b, t)) {
              std::fill_n(dx, width, 0.0f);
              std::fill_n(dr_l, width, 0.0f);
              #pragma omp simd
              for (int64_t u = 0; u < units; ++u) dh_l[u] += dh_out[u];
              continue;
            }
            const float* a = gates.typed_data() + step * width;
            const float* hr_h = hr_candidate.typed_data() + step * units;
            const float* h_prev =
                t > 0 ? hs.typed_data() + (step - 1) * units : h0.typed_data() + b * units;
            #pragma omp simd
            for (int64_t u = 0; u < units; ++u) {
              const float z = a[u], reset = a[units + u], hh = a[2 * units + u];
              const float dh_u = dh_l[u] + dh_out[u];
              const float dz = dh_u * (h_prev[u] - hh) * z * (1.0f - z);
              const float dcandidate = dh_u * (1.0f - z) * (1.0f - hh * hh);
              const float dreset = dcandidate * hr_h[u] * reset * (1.0f - reset);
              dx[u] = dr_l[u] = dz;
              dx[units + u] = dr_l[units + u] = dreset;
              dx[2 * units + u] = dcandidate;
              dr_l[2 * units + u] = dcandidate * reset;
              dh_l[u] = dh_u * z;
            }
          }
          AddTransposedProduct(dr.data(), width, dropout, b0, count,
                               r_t.data() + (b0 / rows_per_model) * units * width, units, 0, 3,
                               scratch.data(), dh);
          StoreStep(dr.data(), b0, count, time, t, width, dhr->typed_data());
        });
      }
      std::copy_n(dh_rows.data(), rows * units, dh0->typed_data() + first * units);
    });
  });
  return ffi::Error::Success();
}

ffi::Error GruResetBeforeForward(ffi::ThreadPool pool, F32Buffer xw, F32Buffer r, F32Buffer h0,
                                 MaskBuffer mask, F32Buffer recurrent_masks, F32Result hs,
                                 F32Result gates) {
  if (!IsSequenceOfGates(xw.dimensions(), 3)) {
    return ffi::Error::InvalidArgument(
        "gru reset_before forward: xw must be [batch, time, 3 * units]");
  }
  const Geometry shape(xw.dimensions(), r.dimensions(), 3);
  const StepMask keep(mask, shape);
  const DropoutMasks dropout(recurrent_masks, shape, 3);
  if (auto error = CheckOptionalInputs("gru reset_before forward", keep, dropout);
      error.failure()) {
    return error;
  }
  const int64_t time = shape.time, rows_per_model = shape.rows_per_model;
  ForEachRowChunk(pool, shape.batch, [&](int64_t first, int64_t end) {
    WithUnits(shape.units, [&](auto units_constant) {
      const int64_t units = units_constant, width = 3 * units;
      const int64_t rows = end - first;
      // One block's worth of rows past the end: a block product reads kBlockRows states.
      std::vector<float> h_rows((rows + kBlockRows) * units, 0.0f);
      std::vector<float> a(kBlockRows * width, 0.0f), reset_h(kBlockRows * units, 0.0f);
      std::vector<float> scratch(kBlockRows * units);
      std::copy_n(h0.typed_data() + first * units, rows * units, h_rows.data());
      for (int64_t t = 0; t < time; ++t) {
        ForEachBlock(first, end, rows_per_model, [&](int64_t b0, int64_t count) {
          float* __restrict h = h_rows.data() + (b0 - first) * units;
          const float* kernel = r.typed_data() + (b0 / rows_per_model) * units * width;
          for (int64_t l = 0; l < count; ++l) std::fill_n(&a[l * width], 2 * units, 0.0f);
          AddRecurrentProduct(h, dropout, b0, count, kernel, units, width, 0, 2, scratch.data(),
                              a.data(), width);
          for (int64_t l = 0; l < count; ++l) {
            const float* x = xw.typed_data() + ((b0 + l) * time + t) * width;
            float* __restrict a_l = &a[l * width];
            #pragma omp simd
            for (int64_t j = 0; j < 2 * units; ++j) a_l[j] = x[j] + a_l[j];
            SigmoidInPlace(a_l, 2 * units);
            const float* masks = dropout.Row(b0 + l);
            const float* mask_h = masks == nullptr ? nullptr : masks + 2 * units;
            const float* h_l = h + l * units;
            #pragma omp simd
            for (int64_t u = 0; u < units; ++u) {
              reset_h[l * units + u] =
                  a_l[units + u] * (mask_h == nullptr ? h_l[u] : h_l[u] * mask_h[u]);
            }
            std::copy_n(x + 2 * units, units, a_l + 2 * units);
          }
          // The candidate's matmul needs r, so it is a second product: (r * h) @ R_h.
          BlockProduct(reset_h.data(), units, units, kernel + 2 * units, width, units, count,
                       a.data() + 2 * units, width);
          for (int64_t l = 0; l < count; ++l) TanhInPlace(&a[l * width + 2 * units], units);
          for (int64_t l = 0; l < count; ++l) {
            const int64_t step = (b0 + l) * time + t;
            float* gates_out = gates->typed_data() + step * width;
            float* h_out = hs->typed_data() + step * units;
            float* __restrict h_l = h + l * units;
            if (!keep.Keeps(b0 + l, t)) {
              std::fill_n(gates_out, width, 0.0f);
              std::copy_n(h_l, units, h_out);
              continue;
            }
            const float* a_l = &a[l * width];
            UpdateState(a_l, units, h_l);
            std::copy_n(a_l, width, gates_out);
            std::copy_n(h_l, units, h_out);
          }
        });
      }
    });
  });
  return ffi::Error::Success();
}

// Gradients of xw (dxw [B, T, 3U], also the gradients of the three recurrent products) and of
// h0.
ffi::Error GruResetBeforeBackward(ffi::ThreadPool pool, F32Buffer dhs, F32Buffer gates,
                                  F32Buffer hs, F32Buffer h0, F32Buffer r, MaskBuffer mask,
                                  F32Buffer recurrent_masks, F32Result dxw, F32Result dh0) {
  const Geometry shape(gates.dimensions(), r.dimensions(), 3);
  const StepMask keep(mask, shape);
  const DropoutMasks dropout(recurrent_masks, shape, 3);
  if (auto error = CheckOptionalInputs("gru reset_before backward", keep, dropout);
      error.failure()) {
    return error;
  }
  const int64_t time = shape.time, rows_per_model = shape.rows_per_model;
  const std::vector<float> r_t =
      TransposeEach(r.typed_data(), shape.models, shape.units, 3 * shape.units);
  ForEachRowChunk(pool, shape.batch, [&](int64_t first, int64_t end) {
    WithUnits(shape.units, [&](auto units_constant) {
      const int64_t units = units_constant, width = 3 * units;
      const int64_t rows = end - first;
      std::vector<float> dh_rows((rows + kBlockRows) * units, 0.0f);
      std::vector<float> d(kBlockRows * width, 0.0f), d_reset_h(kBlockRows * units, 0.0f);
      std::vector<float> scratch(kBlockRows * units);
      for (int64_t t = time - 1; t >= 0; --t) {
        ForEachBlock(first, end, rows_per_model, [&](int64_t b0, int64_t count) {
          float* __restrict dh = dh_rows.data() + (b0 - first) * units;
          const float* kernel_t = r_t.data() + (b0 / rows_per_model) * units * width;
          for (int64_t l = 0; l < count; ++l) {
            const int64_t b = b0 + l, step = b * time + t;
            const float* dh_out = dhs.typed_data() + step * units;
            float* __restrict dh_l = dh + l * units;
            float* __restrict d_l = &d[l * width];
            #pragma omp simd
            for (int64_t u = 0; u < units; ++u) dh_l[u] += dh_out[u];
            if (!keep.Keeps(b, t)) {
              // Zero dz: the products below add nothing to this row's dh.
              std::fill_n(d_l, width, 0.0f);
              continue;
            }
            const float* a = gates.typed_data() + step * width;
            const float* h_prev =
                t > 0 ? hs.typed_data() + (step - 1) * units : h0.typed_data() + b * units;
            #pragma omp simd
            for (int64_t u = 0; u < units; ++u) {
              const float z = a[u], hh = a[2 * units + u];
              d_l[u] = dh_l[u] * (h_prev[u] - hh) * z * (1.0f - z);
              d_l[2 * units + u] = dh_l[u] * (1.0f - z) * (1.0f - hh * hh);
            }
            std::fill_n(&d_reset_h[l * units], units, 0.0f);
          }
          BlockProduct(d.data() + 2 * units, width, units, kernel_t + 2 * units * units, units,
                       units, count, d_reset_h.data(), units);
          for (int64_t l = 0; l < count; ++l) {
            const int64_t b = b0 + l, step = b * time + t;
            if (!keep.Keeps(b, t)) continue;
            const float* a = gates.typed_data() + step * width;
            const float* h_prev =
                t > 0 ? hs.typed_data() + (step - 1) * units : h0.typed_data() + b * units;
            const float* masks = dropout.Row(b);
            const float* mask_h = masks == nullptr ? nullptr : masks + 2 * units;
            const float* dr = &d_reset_h[l * units];
            float* __restrict dh_l = dh + l * units;
            float* __restrict d_l = &d[l * width];
            #pragma omp simd
            for (int64_t u = 0; u < units; ++u) {
              const float reset = a[units + u];
              const float h_masked = mask_h == nullptr ? h_prev[u] : h_prev[u] * mask_h[u];
              const float through_reset = dr[u] * reset;
              d_l[units + u] = dr[u] * h_masked * reset * (1.0f - reset);
              dh_l[u] =
                  dh_l[u] * a[u] + (mask_h == nullptr ? through_reset : through_reset * mask_h[u]);
            }
          }
          AddTransposedProduct(d.data(), width, dropout, b0, count, kernel_t, units, 0, 2,
                               scratch.data(), dh);
          StoreStep(d.data(), b0, count, time, t, width, dxw->typed_data());
        });
      }
      std::copy_n(dh_rows.data(), rows * units, dh0->typed_data() + first * units);
    });
  });
  return ffi::Error::Success();
}

}  // namespace
}  // namespace rnnjax

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnjaxGruForward, rnnjax::GruForward,
                              rnnjax::ffi::Ffi::Bind()
                                  .Ctx<rnnjax::ffi::ThreadPool>()
                                  .Arg<rnnjax::F32Buffer>()   // xw [B, T, 3U]
                                  .Arg<rnnjax::F32Buffer>()   // recurrent kernel [U, 3U]
                                  .Arg<rnnjax::F32Buffer>()   // recurrent bias [3U]
                                  .Arg<rnnjax::F32Buffer>()   // h0 [B, U]
                                  .Arg<rnnjax::MaskBuffer>()  // mask [B, T] or empty
                                  .Arg<rnnjax::F32Buffer>()   // recurrent masks [B, 3, U] or empty
                                  .Ret<rnnjax::F32Buffer>()   // hs [B, T, U]
                                  .Ret<rnnjax::F32Buffer>()   // gates z, r, hh [B, T, 3U]
                                  .Ret<rnnjax::F32Buffer>()   // hr's h part [B, T, U]
);

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnjaxGruBackward, rnnjax::GruBackward,
                              rnnjax::ffi::Ffi::Bind()
                                  .Ctx<rnnjax::ffi::ThreadPool>()
                                  .Arg<rnnjax::F32Buffer>()   // dhs [B, T, U]
                                  .Arg<rnnjax::F32Buffer>()   // gates [B, T, 3U]
                                  .Arg<rnnjax::F32Buffer>()   // hr's h part [B, T, U]
                                  .Arg<rnnjax::F32Buffer>()   // hs [B, T, U]
                                  .Arg<rnnjax::F32Buffer>()   // h0 [B, U]
                                  .Arg<rnnjax::F32Buffer>()   // recurrent kernel [U, 3U]
                                  .Arg<rnnjax::MaskBuffer>()  // mask [B, T] or empty
                                  .Arg<rnnjax::F32Buffer>()   // recurrent masks [B, 3, U] or empty
                                  .Ret<rnnjax::F32Buffer>()   // dxw [B, T, 3U]
                                  .Ret<rnnjax::F32Buffer>()   // dhr [B, T, 3U]
                                  .Ret<rnnjax::F32Buffer>()   // dh0 [B, U]
);

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnjaxGruResetBeforeForward, rnnjax::GruResetBeforeForward,
                              rnnjax::ffi::Ffi::Bind()
                                  .Ctx<rnnjax::ffi::ThreadPool>()
                                  .Arg<rnnjax::F32Buffer>()   // xw [B, T, 3U]
                                  .Arg<rnnjax::F32Buffer>()   // recurrent kernel [U, 3U]
                                  .Arg<rnnjax::F32Buffer>()   // h0 [B, U]
                                  .Arg<rnnjax::MaskBuffer>()  // mask [B, T] or empty
                                  .Arg<rnnjax::F32Buffer>()   // recurrent masks [B, 3, U] or empty
                                  .Ret<rnnjax::F32Buffer>()   // hs [B, T, U]
                                  .Ret<rnnjax::F32Buffer>()   // gates z, r, hh [B, T, 3U]
);

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnjaxGruResetBeforeBackward, rnnjax::GruResetBeforeBackward,
                              rnnjax::ffi::Ffi::Bind()
                                  .Ctx<rnnjax::ffi::ThreadPool>()
                                  .Arg<rnnjax::F32Buffer>()   // dhs [B, T, U]
                                  .Arg<rnnjax::F32Buffer>()   // gates [B, T, 3U]
                                  .Arg<rnnjax::F32Buffer>()   // hs [B, T, U]
                                  .Arg<rnnjax::F32Buffer>()   // h0 [B, U]
                                  .Arg<rnnjax::F32Buffer>()   // recurrent kernel [U, 3U]
                                  .Arg<rnnjax::MaskBuffer>()  // mask [B, T] or empty
                                  .Arg<rnnjax::F32Buffer>()   // recurrent masks [B, 3, U] or empty
                                  .Ret<rnnjax::F32Buffer>()   // dxw [B, T, 3U]
                                  .Ret<rnnjax::F32Buffer>()   // dh0 [B, U]
);
