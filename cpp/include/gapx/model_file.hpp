// SPDX-License-Identifier: BSD-3-Clause
#pragma once

#include "gapx/json.hpp"
#include "gapx/types.hpp"

#include <map>
#include <string>
#include <vector>

namespace gapx {

/// The model-file format this reader understands, as gapx.io.FORMAT_VERSION (1 to 3).
constexpr int model_format_version = 3;

/// One float64 array of a model file, C order.
struct ModelArray {
    std::vector<Index> shape;
    std::vector<Real> data;
    Index rows() const { return shape.empty() ? 1 : shape[0]; }
    Index cols() const { return shape.size() < 2 ? 1 : shape[1]; }
};

/// What a model file holds: its JSON header and its arrays by name ("alpha", "R", ...).
struct ModelFileContents {
    Json header;
    std::map<std::string, ModelArray> arrays;
};

/// Reads a `.gapx` model file as Python's gapx.io.write_model_file writes it: a zip archive
/// (numpy.savez: members stored uncompressed, zip64 headers) of `.npy` arrays and a
/// `__header__.npy` byte string holding the JSON header with the array manifest.
///
/// Validates as gapx.io.read_model_file does: a readable zip whose members are all `.npy`
/// arrays, each CRC-checked, at most once; a header of at most 16 MiB naming the gapx-model
/// format in a version this reader knows (`model_format_version`); every manifest entry present
/// with exactly its shape and dtype and every member in the manifest; member sizes as the
/// manifest needs. Beyond Python's reader: every array must be float64 (as the model's arrays
/// are) and a member must be stored, not deflated (gapx writes stored members; a deflated one,
/// from another zip tool, is refused with a message saying to re-save the model with gapx).
/// Throws FileNotFound for a missing file and InvalidArgument naming the file and the problem.
ModelFileContents read_model_file(const std::string &path);

} // namespace gapx
