// SPDX-License-Identifier: BSD-3-Clause
#include "gapx/model_file.hpp"

#include "gapx/errors.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>

namespace gapx {
namespace {

// Limits as gapx.io: a header is a few kB; the .npy header numpy writes is 128 bytes.
constexpr std::uint64_t max_header_bytes = std::uint64_t{16} << 20;
constexpr std::uint64_t npy_header_allowance = 4096;
constexpr const char *header_member = "__header__";

std::uint32_t crc32(const unsigned char *data, size_t size) {
    static const std::array<std::uint32_t, 256> table = [] {
        std::array<std::uint32_t, 256> t{};
        for (std::uint32_t n = 0; n < 256; ++n) {
            std::uint32_t c = n;
            for (int k = 0; k < 8; ++k) {
                c = (c & 1U) != 0U ? 0xEDB88320U ^ (c >> 1) : c >> 1;
            }
            t[n] = c;
        }
        return t;
    }();
    std::uint32_t c = 0xFFFFFFFFU;
    for (size_t k = 0; k < size; ++k) {
        c = table[(c ^ data[k]) & 0xFFU] ^ (c >> 8);
    }
    return c ^ 0xFFFFFFFFU;
}

/// Little-endian reads that refuse to run past the end of the file.
class Bytes {
  public:
    Bytes(const std::vector<unsigned char> &data, const std::string &where)
        : data_(data), where_(where) {}
    std::uint64_t read(std::uint64_t offset, int width) const {
        need(offset, static_cast<std::uint64_t>(width));
        std::uint64_t value = 0;
        for (int k = width - 1; k >= 0; --k) {
            value = (value << 8) | data_[offset + static_cast<std::uint64_t>(k)];
        }
        return value;
    }
    void need(std::uint64_t offset, std::uint64_t size) const {
        if (offset > data_.size() || size > data_.size() - offset) {
            throw InvalidArgument(where_ + " is corrupted or truncated: a zip record runs past "
                                           "the end of the file");
        }
    }
    const unsigned char *at(std::uint64_t offset) const { return data_.data() + offset; }
    std::uint64_t size() const { return data_.size(); }

  private:
    const std::vector<unsigned char> &data_;
    const std::string &where_;
};

struct Member {
    std::string name;
    std::uint64_t data_offset = 0;
    std::uint64_t size = 0;
    std::uint32_t crc = 0;
};

[[noreturn]] void corrupt(const std::string &where, const std::string &what) {
    throw InvalidArgument(where + " is corrupted or truncated: " + what);
}

/// The members of the archive from its central directory (zip64 records included).
std::map<std::string, Member> zip_members(const Bytes &bytes, const std::string &where) {
    const std::uint64_t size = bytes.size();
    // End of central directory: 22 bytes plus a comment of at most 65535.
    std::uint64_t eocd = size;
    for (std::uint64_t back = 22; back <= std::min<std::uint64_t>(size, 22 + 65535); ++back) {
        if (bytes.read(size - back, 4) == 0x06054b50U) {
            eocd = size - back;
            break;
        }
    }
    if (eocd == size) {
        corrupt(where, "not a readable zip archive");
    }
    std::uint64_t n_entries = bytes.read(eocd + 10, 2);
    std::uint64_t directory = bytes.read(eocd + 16, 4);
    if (n_entries == 0xFFFFU || directory == 0xFFFFFFFFU) {
        if (eocd < 20 || bytes.read(eocd - 20, 4) != 0x07064b50U) {
            corrupt(where, "zip64 end-of-directory locator missing");
        }
        const std::uint64_t record = bytes.read(eocd - 12, 8);
        if (bytes.read(record, 4) != 0x06064b50U) {
            corrupt(where, "zip64 end-of-directory record missing");
        }
        n_entries = bytes.read(record + 32, 8);
        directory = bytes.read(record + 48, 8);
    }
    std::map<std::string, Member> members;
    std::uint64_t offset = directory;
    for (std::uint64_t e = 0; e < n_entries; ++e) {
        if (bytes.read(offset, 4) != 0x02014b50U) {
            corrupt(where, "bad central directory entry");
        }
        const std::uint64_t flags = bytes.read(offset + 8, 2);
        const std::uint64_t method = bytes.read(offset + 10, 2);
        const auto crc = static_cast<std::uint32_t>(bytes.read(offset + 16, 4));
        std::uint64_t stored = bytes.read(offset + 20, 4);
        std::uint64_t inflated = bytes.read(offset + 24, 4);
        const std::uint64_t name_length = bytes.read(offset + 28, 2);
        const std::uint64_t extra_length = bytes.read(offset + 30, 2);
        const std::uint64_t comment_length = bytes.read(offset + 32, 2);
        std::uint64_t local = bytes.read(offset + 42, 4);
        bytes.need(offset + 46, name_length + extra_length);
        const std::string name(reinterpret_cast<const char *>(bytes.at(offset + 46)),
                               name_length);
        // Zip64 extra field: the 64-bit values of the fields saturated above, in this order.
        for (std::uint64_t x = offset + 46 + name_length;
             x + 4 <= offset + 46 + name_length + extra_length;) {
            const std::uint64_t id = bytes.read(x, 2);
            const std::uint64_t length = bytes.read(x + 2, 2);
            if (id == 0x0001U) {
                std::uint64_t field = x + 4;
                for (std::uint64_t *value : {&inflated, &stored, &local}) {
                    if (*value == 0xFFFFFFFFU && field + 8 <= x + 4 + length) {
                        *value = bytes.read(field, 8);
                        field += 8;
                    }
                }
            }
            x += 4 + length;
        }
        if ((flags & 1U) != 0U) {
            throw InvalidArgument(where + ": member '" + name + "' is encrypted");
        }
        if (method != 0) {
            throw InvalidArgument(
                where + ": member '" + name + "' is compressed (zip method " +
                std::to_string(method) +
                "); gapx writes model members uncompressed and its C++ reader reads only those: "
                "re-save the model with gapx (gapx.load(path).save(path))");
        }
        if (stored != inflated) {
            corrupt(where, "member '" + name + "' has different stored and inflated sizes");
        }
        if (bytes.read(local, 4) != 0x04034b50U) {
            corrupt(where, "bad local header of member '" + name + "'");
        }
        Member member;
        member.data_offset =
            local + 30 + bytes.read(local + 26, 2) + bytes.read(local + 28, 2);
        member.size = stored;
        member.crc = crc;
        bytes.need(member.data_offset, member.size);
        const std::string suffix = ".npy";
        if (name.size() < suffix.size() ||
            name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) {
            throw InvalidArgument(where + ": member '" + name + "' is not a .npy array");
        }
        member.name = name;
        const std::string array = name.substr(0, name.size() - suffix.size());
        if (!members.emplace(array, member).second) {
            throw InvalidArgument(where + ": member '" + name + "' appears twice");
        }
        offset += 46 + name_length + extra_length + comment_length;
    }
    return members;
}

/// The value of `key` in a .npy header dict ("{'descr': '<f8', 'fortran_order': False, ...").
std::string npy_field(const std::string &header, const std::string &key, char end) {
    const std::string quoted = "'" + key + "':";
    const size_t at = header.find(quoted);
    if (at == std::string::npos) {
        return "";
    }
    size_t begin = at + quoted.size();
    while (begin < header.size() && header[begin] == ' ') {
        ++begin;
    }
    const size_t stop = header.find(end, begin + 1);
    return stop == std::string::npos ? "" : header.substr(begin, stop - begin + 1);
}

struct NpyArray {
    std::string dtype;
    std::vector<Index> shape;
    const unsigned char *data = nullptr;
    std::uint64_t data_bytes = 0;
    bool fortran = false;
};

/// Parses one member's .npy header (CRC checked first), leaving the data in place.
NpyArray parse_npy(const Bytes &bytes, const Member &member, const std::string &where) {
    const unsigned char *raw = bytes.at(member.data_offset);
    if (crc32(raw, member.size) != member.crc) {
        corrupt(where, "member '" + member.name + "' fails its CRC check");
    }
    const std::string bad = where + ": member '" + member.name + "' is not a valid .npy array";
    if (member.size < 10 || std::memcmp(raw, "\x93NUMPY", 6) != 0) {
        throw InvalidArgument(bad);
    }
    const int major = raw[6];
    const std::uint64_t length_bytes = major == 1 ? 2 : 4;
    if (major < 1 || major > 3 || member.size < 8 + length_bytes) {
        throw InvalidArgument(bad);
    }
    std::uint64_t header_length = 0;
    for (std::uint64_t k = length_bytes; k-- > 0;) {
        header_length = (header_length << 8) | raw[8 + k];
    }
    const std::uint64_t begin = 8 + length_bytes;
    if (header_length > npy_header_allowance || begin + header_length > member.size) {
        throw InvalidArgument(bad);
    }
    const std::string header(reinterpret_cast<const char *>(raw + begin), header_length);
    NpyArray out;
    const std::string descr = npy_field(header, "descr", '\'');
    out.dtype = descr.size() >= 2 ? descr.substr(1, descr.size() - 2) : "";
    out.fortran = npy_field(header, "fortran_order", 'e') == "True";
    const std::string shape = npy_field(header, "shape", ')');
    if (out.dtype.empty() || shape.empty() || shape[0] != '(') {
        throw InvalidArgument(bad);
    }
    std::uint64_t count = 1;
    for (size_t k = 1; k < shape.size();) {
        if (std::isdigit(static_cast<unsigned char>(shape[k])) != 0) {
            size_t stop = k;
            Index value = 0;
            while (stop < shape.size() && std::isdigit(static_cast<unsigned char>(shape[stop]))) {
                value = value * 10 + (shape[stop] - '0');
                if (value > (Index{1} << 40)) {
                    throw InvalidArgument(bad);
                }
                ++stop;
            }
            out.shape.push_back(value);
            count *= static_cast<std::uint64_t>(value);
            if (count > (std::uint64_t{1} << 40)) {
                throw InvalidArgument(bad);
            }
            k = stop;
        } else {
            ++k;
        }
    }
    const std::uint64_t item = out.dtype == "<f8" ? 8 : (out.dtype == "|u1" ? 1 : 0);
    if (item == 0) {
        throw InvalidArgument(where + ": array '" + member.name.substr(0, member.name.size() - 4) +
                              "' has dtype " + out.dtype +
                              "; model arrays are float64 ('<f8')");
    }
    out.data_bytes = count * item;
    if (member.size != begin + header_length + out.data_bytes) {
        throw InvalidArgument(where + ": member '" + member.name + "' holds " +
                              std::to_string(member.size - begin - header_length) +
                              " bytes of data, its shape and dtype need " +
                              std::to_string(out.data_bytes));
    }
    out.data = raw + begin + header_length;
    return out;
}

std::vector<unsigned char> read_bytes(const std::string &path) {
    std::ifstream file(path, std::ios::binary);
    if (!file) {
        throw FileNotFound("model file not found: " + path);
    }
    return std::vector<unsigned char>(std::istreambuf_iterator<char>(file),
                                      std::istreambuf_iterator<char>());
}

} // namespace

ModelFileContents read_model_file(const std::string &path) {
    const std::string where = "model file '" + path + "'";
    const std::vector<unsigned char> data = read_bytes(path);
    const Bytes bytes(data, where);
    const std::map<std::string, Member> members = zip_members(bytes, where);
    const auto header_entry = members.find(header_member);
    if (header_entry == members.end()) {
        throw InvalidArgument(where + " has no gapx header: not a gapx model file");
    }
    const NpyArray header_array = parse_npy(bytes, header_entry->second, where);
    if (header_array.dtype != "|u1" || header_array.shape.size() != 1) {
        throw InvalidArgument(where + ": header is not a byte string");
    }
    if (header_array.data_bytes > max_header_bytes) {
        throw InvalidArgument(where + ": the header inflates to " +
                              std::to_string(header_array.data_bytes) +
                              " bytes, more than the 16 MiB a header may have");
    }
    ModelFileContents out;
    try {
        out.header = Json::parse(std::string(reinterpret_cast<const char *>(header_array.data),
                                             header_array.data_bytes));
    } catch (const InvalidArgument &error) {
        throw InvalidArgument(where + ": header is not valid JSON (" + error.what() + ")");
    }
    const Json *format = out.header.find("format");
    if (format == nullptr || !format->is_string() ||
        format->string("format") != "gapx-model") {
        throw InvalidArgument(where + ": header does not describe a gapx-model file");
    }
    const Json *version = out.header.find("format_version");
    if (version == nullptr || !version->is_integer() || version->integer("version") < 1) {
        throw InvalidArgument(where + ": invalid format_version");
    }
    if (version->integer("version") > model_format_version) {
        throw InvalidArgument(where + " has format version " +
                              std::to_string(version->integer("version")) +
                              ", newer than this gapx reads (" +
                              std::to_string(model_format_version) + "); upgrade gapx");
    }
    const Json *manifest = out.header.find("arrays");
    if (manifest == nullptr || !manifest->is_object()) {
        throw InvalidArgument(where + ": header has no array manifest");
    }
    for (const auto &[name, member] : members) {
        if (name != header_member && manifest->find(name) == nullptr) {
            throw InvalidArgument(where + " has an array not in its manifest: '" + name + "'");
        }
    }
    for (const auto &[name, entry] : manifest->object("the manifest")) {
        const auto found = members.find(name);
        if (found == members.end()) {
            throw InvalidArgument(where + " is missing array '" + name + "'");
        }
        const NpyArray array = parse_npy(bytes, found->second, where);
        const std::string what = where + ": manifest entry of '" + name + "'";
        std::vector<Index> shape;
        for (const Json &size : entry.at("shape", what).array(what)) {
            shape.push_back(size.integer(what));
        }
        if (entry.at("dtype", what).string(what) != array.dtype || shape != array.shape) {
            throw InvalidArgument(where + ": array '" + name +
                                  "' has a shape or dtype other than its manifest entry");
        }
        if (array.dtype != "<f8" || (array.fortran && shape.size() > 2)) {
            throw InvalidArgument(where + ": array '" + name + "' is not a float64 array");
        }
        ModelArray values;
        values.shape = shape;
        values.data.resize(array.data_bytes / sizeof(Real));
        std::memcpy(values.data.data(), array.data, array.data_bytes);
        if (array.fortran && shape.size() == 2) {
            // Column-major on disk: transpose into C order.
            std::vector<Real> c_order(values.data.size());
            for (Index r = 0; r < shape[0]; ++r) {
                for (Index c = 0; c < shape[1]; ++c) {
                    c_order[static_cast<size_t>(r * shape[1] + c)] =
                        values.data[static_cast<size_t>(c * shape[0] + r)];
                }
            }
            values.data.swap(c_order);
        }
        out.arrays.emplace(name, std::move(values));
    }
    return out;
}

} // namespace gapx
