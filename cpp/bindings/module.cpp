// SPDX-License-Identifier: BSD-3-Clause
#include "bindings.hpp"

#include "gapx/errors.hpp"

namespace py = pybind11;

PYBIND11_MODULE(_core, m) {
    m.doc() = "gapx compiled core (private: use the gapx package)";
    m.attr("__version__") = GAPX_VERSION;
#ifdef _OPENMP
    m.attr("has_openmp") = true;
#else
    m.attr("has_openmp") = false;
#endif
    // std::invalid_argument already becomes ValueError; NotImplemented needs its own mapping.
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) {
                std::rethrow_exception(p);
            }
        } catch (const gapx::NotImplemented &e) {
            PyErr_SetString(PyExc_NotImplementedError, e.what());
        } catch (const gapx::FileNotFound &e) {
            PyErr_SetString(PyExc_FileNotFoundError, e.what());
        }
    });
    gapx::bindings::bind_neighbors(m);
    gapx::bindings::bind_soap(m);
    gapx::bindings::bind_model(m);
}
