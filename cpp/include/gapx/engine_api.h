/* SPDX-License-Identifier: BSD-3-Clause */
/* The C interface of the gapx prediction engine (libgapx_engine): what the LAMMPS plugin links,
 * so that it needs neither Eigen nor the engine's C++ headers. Every function catches the
 * engine's exceptions: a failure returns NULL or a nonzero code and gapx_last_error() says why.
 * A model handle is not safe for concurrent calls (it owns the workspaces of its calls); use one
 * per thread or per LAMMPS pair style. */
#ifndef GAPX_ENGINE_API_H
#define GAPX_ENGINE_API_H

#include <stdint.h>

#if defined(__GNUC__)
#define GAPX_API __attribute__((visibility("default")))
#else
#define GAPX_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gapx_model gapx_model;

/* Reads and validates a .gapx model file; NULL on failure. */
GAPX_API gapx_model *gapx_model_read(const char *path);
GAPX_API void gapx_model_free(gapx_model *model);
/* The message of this thread's last failed call ("" if none). */
GAPX_API const char *gapx_last_error(void);

/* Largest term cutoff (Å): the neighbour list a compute call needs. */
GAPX_API double gapx_model_cutoff(const gapx_model *model);
GAPX_API int gapx_model_n_species(const gapx_model *model);
/* Atomic number of the model's k-th species (increasing), 0 if k is out of range. */
GAPX_API int gapx_model_species(const gapx_model *model, int k);
/* The model's species as chemical symbols separated by spaces ("H C O"). */
GAPX_API const char *gapx_model_species_names(const gapx_model *model);
/* Atomic number of a chemical symbol, 0 if it names no element. */
GAPX_API int gapx_atomic_number(const char *symbol);
/* Atoms closer than this (Å) are refused as overlapping. */
GAPX_API double gapx_overlap_distance(void);
/* Whether the model file has a baseline (Ewald), which the engine does not compute. */
GAPX_API int gapx_model_has_baseline(const gapx_model *model);
/* The charge (e) the model's Ewald baseline gives atomic number z: 1 and *charge set when its
 * baseline has a charge table naming z, 0 otherwise (no baseline, per-atom charges, z absent). */
GAPX_API int gapx_model_baseline_charge(const gapx_model *model, int z, double *charge);
/* The model-file format version this engine reads. */
GAPX_API int gapx_format_version(void);

/* Energies and derivatives of centres [0, n_centers) among n_atoms atoms (numbers: atomic
 * numbers of all, centres first). The pairs: first[k] < n_centers grouped by increasing centre,
 * second[k] < n_atoms, vectors[3k..3k+2] = r[second] - r[first] (Å); pairs at distances of
 * gapx_model_cutoff() or more are ignored. Outputs, sized by the caller: energies (n_centers,
 * eV, e0 included), dE_dr (n_atoms x 3, eV/Å: forces are its negative), virial (6: W = -sum dE/dD
 * (x) D as xx, yy, zz, xy, xz, yz, eV) and, unless NULL, atom_virial (n_atoms x 6, the same per
 * atom, half of each pair to each of its atoms). n_threads 0: OpenMP's default.
 * Returns 0, or nonzero on failure (unknown species, overlapping atoms, bad indices). */
GAPX_API int gapx_model_compute(gapx_model *model, int64_t n_centers, int64_t n_atoms,
                                const int *numbers, int64_t n_pairs, const int64_t *first,
                                const int64_t *second, const double *vectors, int n_threads,
                                double *energies, double *dE_dr, double *virial,
                                double *atom_virial);

#ifdef __cplusplus
}
#endif

#endif
