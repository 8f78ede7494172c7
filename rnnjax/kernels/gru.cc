// The Keras GRU recurrences, gates [z, r, h], h' = z * h + (1 - z) * hh, in both variants:
// * reset_after=True:  hr = h @ R + b_rec;  z, r = sigmoid(xw[z, r] + hr[z, r]);
//                      hh = tanh(xw_h + r * hr_h).
// * reset_after=False: z, r = sigmoid(xw[z, r] + h @ R[:, z, r]);  hh = tanh(xw_h + (r * h) @ R_h).
// Under recurrent dropout gate g uses h * mask_g in place of h (for reset_after=False, the
// candidate's r * (h * mask_h)). See recurrence.h for the layout, the masks and the thread split.

#include "recurrence.h"

namespace rnnjax {
namespace {

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
      std::vector<float> h_rows(rows * units), hr(width);
      std::copy_n(h0.typed_data() + first * units, rows * units, h_rows.data());
      for (int64_t t = 0; t < time; ++t) {
        for (int64_t b = first; b < end; ++b) {
          float* __restrict h = h_rows.data() + (b - first) * units;
          const int64_t step = b * time + t;
          float* __restrict a = gates->typed_data() + step * width;
          float* __restrict candidate_out = hr_candidate->typed_data() + step * units;
          float* __restrict h_out = hs->typed_data() + step * units;
          if (!keep.Keeps(b, t)) {
            std::fill_n(a, width, 0.0f);
            std::fill_n(candidate_out, units, 0.0f);
            std::copy_n(h, units, h_out);
            continue;
          }
          const float* x = xw.typed_data() + step * width;
          const int64_t model = b / rows_per_model;
          RecurrentProduct(h, dropout.Row(b), r.typed_data() + model * units * width,
                           recurrent_bias.typed_data() + model * width, units, width, 0, width,
                           hr.data());
          #pragma omp simd
          for (int64_t j = 0; j < 2 * units; ++j) a[j] = x[j] + hr[j];
          SigmoidInPlace(a, 2 * units);
          #pragma omp simd
          for (int64_t u = 0; u < units; ++u) {
            a[2 * units + u] = x[2 * units + u] + a[units + u] * hr[2 * units + u];
          }
          TanhInPlace(a + 2 * units, units);
          std::copy_n(hr.data() + 2 * units, units, candidate_out);
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
      std::vector<float> dh_rows(rows * units, 0.0f), scratch(units);
      for (int64_t t = time - 1; t >= 0; --t) {
        for (int64_t b = first; b < end; ++b) {
          float* __restrict dh = dh_rows.data() + (b - first) * units;
          const int64_t step = b * time + t;
          const float* dh_out = dhs.typed_data() + step * units;
          float* __restrict dx = dxw->typed_data() + step * width;
          float* __restrict dr = dhr->typed_data() + step * width;
          if (!keep.Keeps(b, t)) {
            std::fill_n(dx, width, 0.0f);
            std::fill_n(dr, width, 0.0f);
            #pragma omp simd
            for (int64_t u = 0; u < units; ++u) dh[u] += dh_out[u];
            continue;
          }
          const float* a = gates.typed_data() + step * width;
          const float* hr_h = hr_candidate.typed_data() + step * units;
          const float* h_prev =
              t > 0 ? hs.typed_data() + (step - 1) * units : h0.typed_data() + b * units;
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
          AddTransposedProduct(dr, dropout.Row(b), kernel_t, units, 0, width, scratch.data(), dh);
        }
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
      std::vector<float> h_rows(rows * units), recurrent(2 * units), reset_h(units);
      std::copy_n(h0.typed_data() + first * units, rows * units, h_rows.data());
      for (int64_t t = 0; t < time; ++t) {
        for (int64_t b = first; b < end; ++b) {
          float* __restrict h = h_rows.data() + (b - first) * units;
          const int64_t step = b * time + t;
          float* __restrict a = gates->typed_data() + step * width;
          float* __restrict h_out = hs->typed_data() + step * units;
          if (!keep.Keeps(b, t)) {
            std::fill_n(a, width, 0.0f);
            std::copy_n(h, units, h_out);
            continue;
          }
          const float* x = xw.typed_data() + step * width;
          const float* kernel = r.typed_data() + (b / rows_per_model) * units * width;
          const float* masks = dropout.Row(b);
          RecurrentProduct(h, masks, kernel, nullptr, units, width, 0, 2 * units,
                           recurrent.data());
          #pragma omp simd
          for (int64_t j = 0; j < 2 * units; ++j) a[j] = x[j] + recurrent[j];
          SigmoidInPlace(a, 2 * units);
          const float* mask_h = masks == nullptr ? nullptr : masks + 2 * units;
          #pragma omp simd
          for (int64_t u = 0; u < units; ++u) {
            reset_h[u] = a[units + u] * (mask_h == nullptr ? h[u] : h[u] * mask_h[u]);
          }
          // The candidate's matmul needs r, so it is a second product: (r * h) @ R_h.
          RecurrentProduct(reset_h.data(), nullptr, kernel, x + 2 * units, units, width,
                           2 * units, units, a + 2 * units);
          TanhInPlace(a + 2 * units, units);
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
      std::vector<float> dh_rows(rows * units, 0.0f), scratch(units), d_reset_h(units);
      for (int64_t t = time - 1; t >= 0; --t) {
        for (int64_t b = first; b < end; ++b) {
          float* __restrict dh = dh_rows.data() + (b - first) * units;
          const int64_t step = b * time + t;
          const float* dh_out = dhs.typed_data() + step * units;
          float* __restrict dx = dxw->typed_data() + step * width;
          #pragma omp simd
          for (int64_t u = 0; u < units; ++u) dh[u] += dh_out[u];
          if (!keep.Keeps(b, t)) {
            std::fill_n(dx, width, 0.0f);
            continue;
          }
          const float* a = gates.typed_data() + step * width;
          const float* h_prev =
              t > 0 ? hs.typed_data() + (step - 1) * units : h0.typed_data() + b * units;
          const float* kernel_t = r_t.data() + (b / rows_per_model) * units * width;
          const float* masks = dropout.Row(b);
          const float* mask_h = masks == nullptr ? nullptr : masks + 2 * units;
          #pragma omp simd
          for (int64_t u = 0; u < units; ++u) {
            const float z = a[u], hh = a[2 * units + u];
            dx[u] = dh[u] * (h_prev[u] - hh) * z * (1.0f - z);
            dx[2 * units + u] = dh[u] * (1.0f - z) * (1.0f - hh * hh);
          }
          std::fill(d_reset_h.begin(), d_reset_h.end(), 0.0f);
          AddTransposedProduct(dx + 2 * units, nullptr, kernel_t, units, 2 * units, units,
                               scratch.data(), d_reset_h.data());
          #pragma omp simd
          for (int64_t u = 0; u < units; ++u) {
            const float reset = a[units + u];
            const float h_masked = mask_h == nullptr ? h_prev[u] : h_prev[u] * mask_h[u];
            const float through_reset = d_reset_h[u] * reset;
            dx[units + u] = d_reset_h[u] * h_masked * reset * (1.0f - reset);
            dh[u] = dh[u] * a[u] + (mask_h == nullptr ? through_reset : through_reset * mask_h[u]);
          }
          AddTransposedProduct(dx, masks, kernel_t, units, 0, 2 * units, scratch.data(), dh);
        }
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
