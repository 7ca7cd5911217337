// SPDX-License-Identifier: BSD-3-Clause
#pragma once

#include "gapx/types.hpp"

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace gapx {

/// A parsed JSON value: what the model file's header needs (RFC 8259, no extensions).
class Json {
  public:
    enum class Kind { Null, Bool, Number, String, Array, Object };

    /// Parses `text` (UTF-8); throws InvalidArgument with the byte offset of the first error.
    /// Nesting deeper than 256 levels is refused (a header is a few levels deep).
    static Json parse(const std::string &text);

    Kind kind() const { return kind_; }
    bool is_null() const { return kind_ == Kind::Null; }
    bool is_number() const { return kind_ == Kind::Number; }
    bool is_string() const { return kind_ == Kind::String; }
    bool is_array() const { return kind_ == Kind::Array; }
    bool is_object() const { return kind_ == Kind::Object; }
    /// True for a number written without fraction or exponent (Python's int).
    bool is_integer() const { return kind_ == Kind::Number && integer_; }

    /// Typed access; each throws InvalidArgument naming `what` when the kind differs.
    Real number(const std::string &what) const;
    Index integer(const std::string &what) const;
    bool boolean(const std::string &what) const;
    const std::string &string(const std::string &what) const;
    const std::vector<Json> &array(const std::string &what) const;
    const std::map<std::string, Json> &object(const std::string &what) const;

    /// Object member `key`; throws InvalidArgument naming `what` if this is not an object or the
    /// key is missing. `find` returns null instead when the key is missing.
    const Json &at(const std::string &key, const std::string &what) const;
    const Json *find(const std::string &key) const;
    /// Sets object member `key` (InvalidArgument if this is not an object).
    void set(const std::string &key, const Json &value);

  private:
    friend class JsonParser;
    Kind kind_ = Kind::Null;
    bool boolean_ = false;
    bool integer_ = false;
    Real number_ = 0.0;
    Index integer_value_ = 0;
    std::string string_;
    std::vector<Json> array_;
    std::map<std::string, Json> object_;
};

} // namespace gapx
