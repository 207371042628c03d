/*
 * Copyright (c) 2023.
 *
 * This software is free software;
 *
 * You can redistribute it or modify it under terms of the MIT, Apache License or Zlib license
 */

pub fn upsample_horizontal(
    input: &[i16], _ref: &[i16], _in_near: &[i16], _scratch: &mut [i16], output: &mut [i16]
) {
    assert_eq!(
        input.len() * 2,
        output.len(),
        "Input length is not half the size of the output length"
    );
    assert!(
        output.len() > 4 && input.len() > 2,
        "Too Short of a vector, cannot upsample"
    );

    output[0] = input[0];
    output[1] = (input[0] * 3 + input[1] + 2) >> 2;

    // This code is written for speed and not readability
    //
    // The readable code is
    //
    //      for i in 1..input.len() - 1{
    //         let sample = 3 * input[i] + 2;
    //         out[i * 2] = (sample + input[i - 1]) >> 2;
    //         out[i * 2 + 1] = (sample + input[i + 1]) >> 2;
    //     }
    //
    // The output of a pixel is determined by it's surrounding neighbours but we attach more weight to it's nearest
    // neighbour (input[i]) than to the next nearest neighbour.

    for (output_window, input_window) in output[2..].chunks_exact_mut(2).zip(input.windows(3)) {
        let sample = 3 * input_window[1] + 2;

        // PREIMAGE PATCH: libjpeg's `h2v1_fancy_upsample` biases the left output by 1, the
        // right by 2 (was 2 for both).
        output_window[0] = (sample - 1 + input_window[0]) >> 2;
        output_window[1] = (sample + input_window[2]) >> 2;
    }
    // Get lengths
    let out_len = output.len() - 2;
    let input_len = input.len() - 2;

    // slice the output vector
    let f_out = &mut output[out_len..];
    let i_last = &input[input_len..];

    // write out manually..
    f_out[0] = (3 * i_last[1] + i_last[0] + 1) >> 2; // PREIMAGE PATCH: bias 1, as libjpeg
    f_out[1] = i_last[1];
}
pub fn upsample_vertical(
    input: &[i16], in_near: &[i16], in_far: &[i16], _scratch_space: &mut [i16], output: &mut [i16]
) {
    assert_eq!(input.len() * 2, output.len());
    assert_eq!(in_near.len(), input.len());
    assert_eq!(in_far.len(), input.len());

    let middle = output.len() / 2;

    let (out_top, out_bottom) = output.split_at_mut(middle);

    // for the first row, closest row is in_near
    // PREIMAGE PATCH: libjpeg's `h1v2_fancy_upsample` biases the upper row by 1 (was 2).
    for ((near, far), x) in input.iter().zip(in_near.iter()).zip(out_top) {
        *x = (((3 * near) + 1) + far) >> 2;
    }
    // for the second row, the closest row to input is in_far
    for ((near, far), x) in input.iter().zip(in_far.iter()).zip(out_bottom) {
        *x = (((3 * near) + 2) + far) >> 2;
    }
}

/// PREIMAGE PATCH: libjpeg's `h2v2_fancy_upsample`, bit for bit. The vertical 3:1 sums are
/// kept unrounded (4 extra bits) into the horizontal pass, which rounds once with biases
/// 8 and 7; zune-jpeg rounded after each pass, which moved 25 % of a 4:2:0 photo's pixels
/// by up to 5 levels from what PIL (libjpeg-turbo) decodes.
#[inline(always)]
pub fn upsample_hv(
    input: &[i16], in_near: &[i16], in_far: &[i16], scratch_space: &mut [i16], output: &mut [i16]
) {
    assert_eq!(input.len() * 4, output.len());
    assert!(input.len() * 2 <= scratch_space.len());
    assert!(input.len() >= 2, "Too Short of a vector, cannot upsample");
    let n = input.len();
    let (upper, lower) = scratch_space[..n * 2].split_at_mut(n);
    for i in 0..n {
        upper[i] = 3 * input[i] + in_near[i];
        lower[i] = 3 * input[i] + in_far[i];
    }
    let (out_upper, out_lower) = output.split_at_mut(n * 2);
    for (sums, out) in [(&*upper, out_upper), (&*lower, out_lower)] {
        out[0] = (sums[0] * 4 + 8) >> 4;
        out[1] = (sums[0] * 3 + sums[1] + 7) >> 4;
        for i in 1..n - 1 {
            out[i * 2] = (sums[i] * 3 + sums[i - 1] + 8) >> 4;
            out[i * 2 + 1] = (sums[i] * 3 + sums[i + 1] + 7) >> 4;
        }
        out[n * 2 - 2] = (sums[n - 1] * 3 + sums[n - 2] + 8) >> 4;
        out[n * 2 - 1] = (sums[n - 1] * 4 + 7) >> 4;
    }
}

pub fn upsample_generic(
    input: &[i16], _in_near: &[i16], _in_far: &[i16], _scratch_space: &mut [i16],
    output: &mut [i16]
) {
    // use nearest sample
    let difference = output.len() / input.len();
    if difference > 0 {
        // nearest neighbour
        for (input, chunk_output) in input.iter().zip(output.chunks_exact_mut(difference)) {
            chunk_output.iter_mut().for_each(|x| *x = *input);
        }
    }
}

/// PREIMAGE PATCH: the libjpeg-exact [`upsample_hv`] compiled for AVX2 (same results).
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
#[target_feature(enable = "avx2")]
pub unsafe fn upsample_hv_libjpeg_avx2(
    input: &[i16], in_near: &[i16], in_far: &[i16], scratch_space: &mut [i16], output: &mut [i16]
) {
    upsample_hv(input, in_near, in_far, scratch_space, output)
}
