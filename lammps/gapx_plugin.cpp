// SPDX-License-Identifier: BSD-3-Clause
// Registers pair_style gapx with LAMMPS's plugin loader (`plugin load`, or LAMMPS_PLUGIN_PATH:
// LAMMPS loads every *plugin.so there at start-up).
#include "pair_gapx.h"

#include "lammps.h"

using namespace LAMMPS_NS;

// The registration record of LAMMPS's src/PLUGIN/lammpsplugin.h, which the PyPI wheel does not
// ship: declared here with the same layout.
extern "C" {
typedef void *(lammpsplugin_factory1)(LAMMPS *);
typedef void *(lammpsplugin_factory2)(LAMMPS *, int, char **);
typedef struct {
    const char *version;
    const char *style;
    const char *name;
    const char *info;
    const char *author;
    union {
        lammpsplugin_factory1 *v1;
        lammpsplugin_factory2 *v2;
    } creator;
    void *handle;
} lammpsplugin_t;
typedef void (*lammpsplugin_regfunc)(lammpsplugin_t *, void *);
}

static void *gapx_creator(LAMMPS *lmp) { return new PairGapx(lmp); }

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc) {
    lammpsplugin_t plugin;
    // The running LAMMPS's own version string: the plugin is built against this LAMMPS.
    plugin.version = static_cast<LAMMPS *>(lmp)->version;
    plugin.style = "pair";
    plugin.name = "gapx";
    plugin.info = "gapx GAP model (SOAP + two-body sparse GP) pair style";
    plugin.author = "gapx developers";
    plugin.creator.v1 = &gapx_creator;
    plugin.handle = handle;
    (*reinterpret_cast<lammpsplugin_regfunc>(regfunc))(&plugin, lmp);
}
