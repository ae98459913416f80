/* SPDX-License-Identifier: GPL-2.0-only */
/* What the files of the extension tamalloc.backends._bpfiter share. */
#ifndef TAMALLOC_BPFITER_H
#define TAMALLOC_BPFITER_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* OSError(err, "what: strerror (libbpf: its last warning)"); returns NULL. */
PyObject *bpfiter_os_error(int err, const char *what);

/* pinned.c: the fd of the task iterator link pinned at dir/name, after the checks
 * there; -1 with OSError set. */
int bpfiter_open_checked(const char *dir, const char *name);

/* decode.c */
PyObject *bpfiter_mem_stats(PyObject *self, PyObject *args);
PyObject *bpfiter_oom_rows(PyObject *self, PyObject *args);
PyObject *bpfiter_totals(PyObject *self, PyObject *args);

#endif
