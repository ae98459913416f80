// SPDX-License-Identifier: GPL-2.0-only
/*
 * tamalloc.backends._bpfiter: the task iterator of memstats.bpf.o, loaded through
 * libbpf or opened where `tamalloc bpf pin` pinned it, one pass's records as bytes,
 * and their decoding into what the bpf backend returns.
 *
 * load(path): open, load (libbpf relocates the CO-RE accesses against
 * /sys/kernel/btf/vmlinux) and attach; the link is kept for the life of the process
 * (a second load() is a no-op), so only the first pass pays for the load (20-70 ms).
 * open_pinned(dir, name): the link pinned in bpffs, checked (see pinned.c): well
 * under a millisecond.  pin(path): the loaded link pinned there.
 * read(): bpf_iter_create() on the link (the first one loaded or opened), read()
 * until 0, the bytes.  Errors are OSError with libbpf's errno and its last warning.
 * mem_stats(), oom_rows(), totals(): the records decoded (decode.c).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "bpfiter.h"

static struct bpf_object *obj;
static struct bpf_link *iter_link;
/* What read() creates its iterators from: the first link loaded or opened, never
 * closed nor replaced (a read() in another thread may be using it without the GIL). */
static int iter_fd = -1;
static size_t last_size = 64 * 1024;	/* grows to the last pass's size */
static char last_warning[256];

/* libbpf prints to stderr by default: keep its last warning for the error instead. */
static int keep_warning(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	size_t len;

	if (level == LIBBPF_DEBUG)
		return 0;
	vsnprintf(last_warning, sizeof(last_warning), fmt, ap);
	if (!strncmp(last_warning, "libbpf: ", 8))
		memmove(last_warning, last_warning + 8, strlen(last_warning + 8) + 1);
	len = strlen(last_warning);
	while (len && (last_warning[len - 1] == '\n' || last_warning[len - 1] == ' '))
		last_warning[--len] = '\0';
	return 0;
}

/* OSError(err, "what: strerror (libbpf: its last warning)"); returns NULL. */
PyObject *bpfiter_os_error(int err, const char *what)
{
	char reason[128];
	PyObject *exc;

	if (err < 0)
		err = -err;
	if (!err)
		err = EINVAL;
	/* libbpf's own codes (4000 and up) too, e.g. "Invalid ELF file" */
	if (libbpf_strerror(err, reason, sizeof(reason)))
		snprintf(reason, sizeof(reason), "%s", strerror(err));
	if (last_warning[0])
		exc = Py_BuildValue("(iN)", err, PyUnicode_FromFormat("%s: %s (libbpf: %s)", what,
								      reason, last_warning));
	else
		exc = Py_BuildValue("(iN)", err, PyUnicode_FromFormat("%s: %s", what, reason));
	if (exc) {
		PyErr_SetObject(PyExc_OSError, exc);
		Py_DECREF(exc);
	}
	return NULL;
}

static PyObject *bpfiter_load(PyObject *self, PyObject *arg)
{
	struct bpf_program *prog;
	struct bpf_object *o;
	struct bpf_link *l;
	PyObject *bytes;
	int err;

	(void)self;
	if (iter_link)
		Py_RETURN_NONE;
	if (!PyUnicode_FSConverter(arg, &bytes))
		return NULL;
	last_warning[0] = '\0';
	libbpf_set_print(keep_warning);
	/* The GIL stays held: two threads cannot load at once, and the static pointers
	 * are set only when everything worked. */
	o = bpf_object__open_file(PyBytes_AS_STRING(bytes), NULL);
	Py_DECREF(bytes);
	if (!o)
		return bpfiter_os_error(errno, "cannot open the BPF object");
	err = bpf_object__load(o);
	if (err) {
		bpf_object__close(o);
		return bpfiter_os_error(err, "cannot load the BPF program");
	}
	prog = bpf_object__find_program_by_name(o, "tam_memstats");
	if (!prog) {
		bpf_object__close(o);
		return bpfiter_os_error(ENOENT, "no tam_memstats in the BPF object");
	}
	l = bpf_program__attach_iter(prog, NULL);
	if (!l) {
		err = errno;
		bpf_object__close(o);
		return bpfiter_os_error(err, "cannot attach the task iterator");
	}
	obj = o;
	iter_link = l;
	if (iter_fd < 0)
		iter_fd = bpf_link__fd(l);
	Py_RETURN_NONE;
}

static PyObject *bpfiter_open_pinned(PyObject *self, PyObject *args)
{
	PyObject *dir, *name;
	int fd;

	(void)self;
	if (!PyArg_ParseTuple(args, "O&O&", PyUnicode_FSConverter, &dir, PyUnicode_FSConverter,
			      &name))
		return NULL;
	if (iter_fd >= 0) {
		Py_DECREF(dir);
		Py_DECREF(name);
		Py_RETURN_NONE;
	}
	last_warning[0] = '\0';
	fd = bpfiter_open_checked(PyBytes_AS_STRING(dir), PyBytes_AS_STRING(name));
	Py_DECREF(dir);
	Py_DECREF(name);
	if (fd < 0)
		return NULL;
	iter_fd = fd;
	Py_RETURN_NONE;
}

static PyObject *bpfiter_check_pinned(PyObject *self, PyObject *args)
{
	PyObject *dir, *name;
	int fd;

	(void)self;
	if (!PyArg_ParseTuple(args, "O&O&", PyUnicode_FSConverter, &dir, PyUnicode_FSConverter,
			      &name))
		return NULL;
	last_warning[0] = '\0';
	fd = bpfiter_open_checked(PyBytes_AS_STRING(dir), PyBytes_AS_STRING(name));
	Py_DECREF(dir);
	Py_DECREF(name);
	if (fd < 0)
		return NULL;
	close(fd);
	Py_RETURN_NONE;
}

static PyObject *bpfiter_pin(PyObject *self, PyObject *arg)
{
	PyObject *bytes;
	int err;

	(void)self;
	if (!iter_link) {
		PyErr_SetString(PyExc_RuntimeError, "load() first");
		return NULL;
	}
	if (!PyUnicode_FSConverter(arg, &bytes))
		return NULL;
	last_warning[0] = '\0';
	err = bpf_link__pin(iter_link, PyBytes_AS_STRING(bytes));
	Py_DECREF(bytes);
	if (err)
		return bpfiter_os_error(err, "cannot pin the task iterator");
	/* The pin holds its own reference: the iterator outlives this process. */
	Py_RETURN_NONE;
}

static PyObject *bpfiter_read(PyObject *self, PyObject *unused)
{
	size_t cap, len = 0;
	ssize_t n = 0;
	int fd, link_fd, err = 0;
	char *buf, *grown;
	PyObject *out;

	(void)self;
	(void)unused;
	if (iter_fd < 0) {
		PyErr_SetString(PyExc_RuntimeError, "load() or open_pinned() first");
		return NULL;
	}
	link_fd = iter_fd;
	cap = last_size + last_size / 4;
	buf = malloc(cap);
	if (!buf)
		return PyErr_NoMemory();
	Py_BEGIN_ALLOW_THREADS
	fd = bpf_iter_create(link_fd);
	if (fd < 0) {
		err = errno;
	} else {
		for (;;) {
			if (cap - len < 4096) {
				grown = realloc(buf, cap * 2);
				if (!grown) {
					err = ENOMEM;
					break;
				}
				buf = grown;
				cap *= 2;
			}
			n = read(fd, buf + len, cap - len);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0) {
				err = errno;
				break;
			}
			if (n == 0)
				break;
			len += (size_t)n;
		}
		close(fd);
	}
	Py_END_ALLOW_THREADS
	if (err) {
		free(buf);
		if (err == ENOMEM)
			return PyErr_NoMemory();
		last_warning[0] = '\0';
		return bpfiter_os_error(err, "reading the task iterator");
	}
	if (len > last_size)
		last_size = len;
	out = PyBytes_FromStringAndSize(buf, (Py_ssize_t)len);
	free(buf);
	return out;
}

/* FNV-1a (64 bits) of a file's bytes, in hex: tells builds of the object apart for
 * the pin's name, at a few microseconds and no module to import (zlib or hashlib
 * cost 0.3-10 ms of a one-shot command's start). Not a defence: only root may pin. */
static PyObject *bpfiter_file_tag(PyObject *self, PyObject *arg)
{
	unsigned long long hash = 14695981039346656037ULL;
	unsigned char buf[16384];
	char hex[17];
	PyObject *bytes;
	ssize_t n = 0, i;
	int fd, err = 0;

	(void)self;
	if (!PyUnicode_FSConverter(arg, &bytes))
		return NULL;
	fd = open(PyBytes_AS_STRING(bytes), O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, arg);
		Py_DECREF(bytes);
		return NULL;
	}
	Py_DECREF(bytes);
	for (;;) {
		n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			err = n < 0 ? errno : 0;
			break;
		}
		for (i = 0; i < n; i++)
			hash = (hash ^ buf[i]) * 1099511628211ULL;
	}
	close(fd);
	if (err) {
		errno = err;
		return PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, arg);
	}
	snprintf(hex, sizeof(hex), "%016llx", hash);
	return PyUnicode_FromString(hex);
}

static PyObject *bpfiter_loaded(PyObject *self, PyObject *unused)
{
	(void)self;
	(void)unused;
	return PyBool_FromLong(iter_link != NULL);
}

static PyObject *bpfiter_ready(PyObject *self, PyObject *unused)
{
	(void)self;
	(void)unused;
	return PyBool_FromLong(iter_fd >= 0);
}

static PyMethodDef methods[] = {
	{"load", bpfiter_load, METH_O, "load(path): load and attach the iterator once"},
	{"read", bpfiter_read, METH_NOARGS, "read() -> bytes: one pass of the iterator"},
	{"loaded", bpfiter_loaded, METH_NOARGS, "loaded() -> bool: load() succeeded"},
	{"ready", bpfiter_ready, METH_NOARGS, "ready() -> bool: loaded or opened, read() works"},
	{"open_pinned", bpfiter_open_pinned, METH_VARARGS,
	 "open_pinned(dir, name): the pinned link, checked; a no-op once ready"},
	{"file_tag", bpfiter_file_tag, METH_O, "file_tag(path) -> str: FNV-1a 64 of the bytes, hex"},
	{"check_pinned", bpfiter_check_pinned, METH_VARARGS,
	 "check_pinned(dir, name): open_pinned()'s checks, the link closed again"},
	{"pin", bpfiter_pin, METH_O, "pin(path): pin the loaded link at path"},
	{"mem_stats", bpfiter_mem_stats, METH_VARARGS,
	 "mem_stats(data, cls, total_pages, page_size) -> list of cls"},
	{"oom_rows", bpfiter_oom_rows, METH_VARARGS,
	 "oom_rows(data, total_pages, page_size) -> list of (pid, name, cgroup_id, rss_kb,"
	 " swap_kb, pgtables_kb, oom_score, oom_score_adj, unkillable, oom_victim, oom_origin,"
	 " exiting)"},
	{"totals", bpfiter_totals, METH_VARARGS,
	 "totals(data, page_size) -> (processes, reserved_kb, committed_kb, swap_kb)"},
	{NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
	PyModuleDef_HEAD_INIT, "_bpfiter", "libbpf loader of the task iterator", -1, methods,
	NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__bpfiter(void)
{
	return PyModule_Create(&module);
}
