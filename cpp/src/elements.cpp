// SPDX-License-Identifier: BSD-3-Clause
#include "gapx/elements.hpp"

#include <array>

namespace gapx {
namespace {

/// Chemical symbols by atomic number - 1 (as ase.data.chemical_symbols).
constexpr std::array<const char *, 118> symbols = {
    "H", "He", "Li", "Be", "B", "C", "N", "O", "F", "Ne", "Na", "Mg",
    "Al", "Si", "P", "S", "Cl", "Ar", "K", "Ca", "Sc", "Ti", "V", "Cr",
    "Mn", "Fe", "Co", "Ni", "Cu", "Zn", "Ga", "Ge", "As", "Se", "Br", "Kr",
    "Rb", "Sr", "Y", "Zr", "Nb", "Mo", "Tc", "Ru", "Rh", "Pd", "Ag", "Cd",
    "In", "Sn", "Sb", "Te", "I", "Xe", "Cs", "Ba", "La", "Ce", "Pr", "Nd",
    "Pm", "Sm", "Eu", "Gd", "Tb", "Dy", "Ho", "Er", "Tm", "Yb", "Lu", "Hf",
    "Ta", "W", "Re", "Os", "Ir", "Pt", "Au", "Hg", "Tl", "Pb", "Bi", "Po",
    "At", "Rn", "Fr", "Ra", "Ac", "Th", "Pa", "U", "Np", "Pu", "Am", "Cm",
    "Bk", "Cf", "Es", "Fm", "Md", "No", "Lr", "Rf", "Db", "Sg", "Bh", "Hs",
    "Mt", "Ds", "Rg", "Cn", "Nh", "Fl", "Mc", "Lv", "Ts", "Og",
};

} // namespace

int atomic_number(const std::string &symbol) {
    for (size_t k = 0; k < symbols.size(); ++k) {
        if (symbol == symbols[k]) {
            return static_cast<int>(k) + 1;
        }
    }
    return 0;
}

std::string chemical_symbol(int number) {
    if (number < 1 || number > static_cast<int>(symbols.size())) {
        return "Z=" + std::to_string(number);
    }
    return symbols[static_cast<size_t>(number) - 1];
}

} // namespace gapx
