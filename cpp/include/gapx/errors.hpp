// SPDX-License-Identifier: BSD-3-Clause
#pragma once

#include <stdexcept>
#include <string>

namespace gapx {

/// A caller passed something the core cannot work with; becomes ValueError in Python.
class InvalidArgument : public std::invalid_argument {
  public:
    explicit InvalidArgument(const std::string &what) : std::invalid_argument(what) {}
};

/// A valid request for something the core does not implement; becomes NotImplementedError.
class NotImplemented : public std::logic_error {
  public:
    explicit NotImplemented(const std::string &what) : std::logic_error(what) {}
};

/// A file the caller named does not exist; becomes FileNotFoundError.
class FileNotFound : public std::runtime_error {
  public:
    explicit FileNotFound(const std::string &what) : std::runtime_error(what) {}
};

} // namespace gapx
