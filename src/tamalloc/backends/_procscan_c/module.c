/* The Python module: the arguments of scan() converted, the records built as the
 * caller's class, the functions over the kept files, and the kernel probe. */
#include "procscan.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "kept.h"
#include "scan.h"

#define N_FIELDS 11

static PyObject *build(PyTypeObject *cls, const struct record *rec)
{
	unsigned long long reserved = rec->memory[F_SIZE];
	unsigned long long committed = rec->memory[F_RSS];
	PyObject *obj;
	PyObject *items[N_FIELDS];
	int i;

	items[0] = PyLong_FromLong(rec->pid);
	items[1] = PyUnicode_DecodeUTF8(rec->name, rec->name_len, "replace");
	items[2] = PyLong_FromUnsignedLongLong(reserved);
	items[3] = PyLong_FromUnsignedLongLong(committed);
	/* As Python's committed / reserved * 100: both convert to double exactly. */
	items[4] = PyFloat_FromDouble(reserved ? (double)committed / (double)reserved * 100.0 : 0.0);
	items[5] = PyLong_FromUnsignedLongLong(rec->memory[F_ANON]);
	items[6] = PyLong_FromUnsignedLongLong(rec->memory[F_FILE]);
	items[7] = PyLong_FromUnsignedLongLong(rec->memory[F_SHMEM]);
	items[8] = PyLong_FromUnsignedLongLong(rec->memory[F_SWAP]);
	items[9] = PyLong_FromLong(rec->oom_score);
	items[10] = PyLong_FromLong(rec->oom_score_adj);
	/* A NamedTuple is a tuple subclass: allocated as tuple_subtype_new does. */
	obj = cls->tp_alloc(cls, N_FIELDS);
	for (i = 0; i < N_FIELDS; i++) {
		if (!items[i] || !obj) {
			Py_XDECREF(obj);
			for (i = 0; i < N_FIELDS; i++)
				Py_XDECREF(items[i]);
			return NULL;
		}
	}
	for (i = 0; i < N_FIELDS; i++)
		PyTuple_SET_ITEM(obj, i, items[i]);
	return obj;
}

/* The errnos to skip, into skip[]: each a positive int, at most MAX_SKIP_ERRNOS
 * different ones. Returns how many, or -1 with an exception set. */
static int parse_skip(PyObject *skip_errnos, int *skip)
{
	PyObject *iter, *item;
	int n_skip = 0;

	iter = PyObject_GetIter(skip_errnos);
	if (!iter)
		return -1;
	while ((item = PyIter_Next(iter))) {
		long value = PyLong_AsLong(item);

		Py_DECREF(item);
		if (value == -1 && PyErr_Occurred())
			break;
		if (value <= 0 || value > INT_MAX) {
			PyErr_Format(PyExc_ValueError, "scan(): %ld is not an errno", value);
			break;
		}
		if (ps_is_skipped((int)value, skip, n_skip))
			continue;
		if (n_skip == MAX_SKIP_ERRNOS) {
			PyErr_SetString(PyExc_ValueError, "scan(): at most 16 errnos to skip");
			break;
		}
		skip[n_skip++] = (int)value;
	}
	Py_DECREF(iter);
	return PyErr_Occurred() ? -1 : n_skip;
}

/*
 * The pids into new records (*recs, *count). The items are converted from a tuple
 * of the caller's: converting one may run Python code (__index__), which may change
 * the caller's list but not the tuple, whose references keep every item alive.
 */
static int parse_pids(PyObject *pids, struct record **recs, Py_ssize_t *count)
{
	PyObject *tuple = PySequence_Tuple(pids);
	Py_ssize_t i, n;

	if (!tuple)
		return -1;
	n = PyTuple_GET_SIZE(tuple);
	*recs = calloc(n ? n : 1, sizeof(**recs));
	if (!*recs) {
		Py_DECREF(tuple);
		PyErr_NoMemory();
		return -1;
	}
	for (i = 0; i < n; i++) {
		long pid = PyLong_AsLong(PyTuple_GET_ITEM(tuple, i));

		if (pid == -1 && PyErr_Occurred())
			break;
		if (pid < 0) {
			PyErr_Format(PyExc_ValueError, "scan(): %ld is not a pid", pid);
			break;
		}
		(*recs)[i].pid = pid;
	}
	Py_DECREF(tuple);
	if (PyErr_Occurred()) {
		free(*recs);
		*recs = NULL;
		return -1;
	}
	*count = n;
	return 0;
}

static PyObject *scan(PyObject *self, PyObject *args)
{
	PyObject *pids, *skip_errnos, *cls_obj, *result = NULL;
	PyTypeObject *cls;
	struct record *recs = NULL;
	int skip[MAX_SKIP_ERRNOS];
	int wanted_threads = 0;
	int hold = 0;
	Py_ssize_t max_bytes = KEPT_BYTES_DEFAULT;
	int n_skip;
	Py_ssize_t n = 0, i;
	int failed_errno = 0;
	const char *failed_what = "/proc";
	long failed_pid = 0;

	(void)self;
	if (!PyArg_ParseTuple(args, "OO!O|ipn", &pids, &PyType_Type, &cls_obj, &skip_errnos,
			      &wanted_threads, &hold, &max_bytes))
		return NULL;
	cls = (PyTypeObject *)cls_obj;
	if (!PyType_IsSubtype(cls, &PyTuple_Type)) {
		PyErr_SetString(PyExc_TypeError, "scan() needs a tuple subclass");
		return NULL;
	}
	if (max_bytes < 0) {
		PyErr_SetString(PyExc_ValueError, "scan(): max_bytes must not be negative");
		return NULL;
	}
	n_skip = parse_skip(skip_errnos, skip);
	if (n_skip < 0)
		return NULL;
	if (pids != Py_None && parse_pids(pids, &recs, &n))
		return NULL;
	/*
	 * No Python object is touched here: other threads run while /proc is read. Nor
	 * is any Python code run from here on until the records are built (the arguments
	 * were converted above), so a caller cannot come back in while kept is taken.
	 */
	Py_BEGIN_ALLOW_THREADS
	if (!recs) {
		ps_fds_lock();
		failed_errno = ps_list_proc(&recs, &n);
		ps_fds_unlock();
	}
	if (!failed_errno) {
		Py_ssize_t failed_index;

		/* Kept files are matched by pid to the records of a full scan only. */
		failed_errno = ps_run_scan(recs, n, skip, n_skip,
					   ps_scan_threads(n, wanted_threads),
					   hold && pids == Py_None, (long)max_bytes, &failed_index);
		if (failed_errno && failed_index >= 0) {
			failed_pid = recs[failed_index].pid;
			failed_what = NULL;
		}
	}
	Py_END_ALLOW_THREADS

	if (failed_errno) {
		char path[64];

		if (!failed_what) {
			snprintf(path, sizeof(path), "/proc/%ld", failed_pid);
			failed_what = path;
		}
		errno = failed_errno;
		PyErr_SetFromErrnoWithFilename(PyExc_OSError, failed_what);
		goto out_free;
	}
	result = PyList_New(0);
	for (i = 0; result && i < n; i++) {
		PyObject *obj;

		if (recs[i].state != READ_OK)
			continue;
		obj = build(cls, &recs[i]);
		if (!obj || PyList_Append(result, obj)) {
			Py_XDECREF(obj);
			Py_CLEAR(result);
			break;
		}
		Py_DECREF(obj);
	}
out_free:
	free(recs);
	return result;
}

/* Closes every kept file; False (and nothing closed) while a scan has them. */
static PyObject *release(PyObject *self, PyObject *unused)
{
	(void)self;
	(void)unused;
	if (__atomic_exchange_n(&ps_kept.busy, 1, __ATOMIC_ACQUIRE))
		Py_RETURN_FALSE;
	ps_close_kept();
	__atomic_store_n(&ps_kept.busy, 0, __ATOMIC_RELEASE);
	Py_RETURN_TRUE;
}

/* In the child of os.fork(): frees what the scans of threads left in the parent had
 * (their fds were closed at the fork); nothing elsewhere. */
static PyObject *forget_in_child(PyObject *self, PyObject *unused)
{
	(void)self;
	(void)unused;
	while (ps_orphans) {
		struct scan_job *job = ps_orphans;

		ps_orphans = job->next_job;
		/* job->lock may be held by a thread left behind: never destroyed. */
		ps_free_job(job);
	}
	Py_RETURN_NONE;
}

/* The fds kept (a list, empty while a scan has them), or with bytes=True the kernel
 * memory they are counted as. */
static PyObject *kept_fds(PyObject *self, PyObject *unused)
{
	PyObject *list = PyList_New(0);
	Py_ssize_t j;
	int k;

	(void)self;
	(void)unused;
	if (!list || __atomic_exchange_n(&ps_kept.busy, 1, __ATOMIC_ACQUIRE))
		return list;
	for (j = 0; j < ps_kept.n; j++) {
		for (k = 0; k < N_HELD; k++) {
			PyObject *fd;

			if (ps_kept.slots[j].f[k].fd < 0)
				continue;
			fd = PyLong_FromLong(ps_kept.slots[j].f[k].fd);
			if (!fd || PyList_Append(list, fd)) {
				Py_XDECREF(fd);
				Py_CLEAR(list);
				goto out;
			}
			Py_DECREF(fd);
		}
	}
out:
	__atomic_store_n(&ps_kept.busy, 0, __ATOMIC_RELEASE);
	return list;
}

/* The kernel memory the kept files are counted as (see KEPT_FILE_COST). */
static PyObject *kept_bytes(PyObject *self, PyObject *unused)
{
	long long total = 0;
	Py_ssize_t j;
	int k;

	(void)self;
	(void)unused;
	if (__atomic_exchange_n(&ps_kept.busy, 1, __ATOMIC_ACQUIRE))
		return PyLong_FromLong(0);
	for (j = 0; j < ps_kept.n; j++)
		for (k = 0; k < N_HELD; k++)
			if (ps_kept.slots[j].f[k].fd >= 0)
				total += ps_kept.slots[j].f[k].cost;
	__atomic_store_n(&ps_kept.busy, 0, __ATOMIC_RELEASE);
	return PyLong_FromLongLong(total);
}

/* What the default backend's choice needs of the kernel, here so that a command
 * that ends up on procfs does not load ctypes (a fifth of a bare Python's start-up)
 * for one syscall; tamalloc._libc makes the same call where this module is not built. */
static PyObject *syscall_errno(PyObject *self, PyObject *arg)
{
	long nr = PyLong_AsLong(arg);
	long ret;

	if (nr == -1 && PyErr_Occurred())
		return NULL;
	errno = 0;
	ret = syscall(nr, NULL, 0u, 0u);
	return PyLong_FromLong(ret == -1 ? errno : 0);
}

static PyMethodDef methods[] = {
	{ "scan", scan, METH_VARARGS,
	  "scan(pids, cls, skip_errnos) -> list: cls(pid, name, reserved_kb, committed_kb,\n"
	  "committed_pct, anon_kb, file_kb, shmem_kb, swap_kb, oom_score, oom_score_adj)\n"
	  "for each process with an address space, in the order of pids (None: every\n"
	  "process in /proc, by increasing pid); one whose reads fail with an errno in\n"
	  "skip_errnos (at most 16) is left out, any other errno raises OSError (the\n"
	  "first in pids).\n"
	  "threads: how many threads read /proc (at most 4); 0 (default): one per 256\n"
	  "processes, at most one per CPU this process may use.\n"
	  "hold: with pids None, read again the files the last such scan kept open and\n"
	  "keep this scan's open for the next (fds at or above half the soft\n"
	  "RLIMIT_NOFILE, close-on-exec), pinning at most max_bytes of kernel memory\n"
	  "(default KEPT_BYTES_DEFAULT; about 9.5 KiB a process)." },
	{ "release", release, METH_NOARGS,
	  "release() -> bool: close every file kept open; False while a scan has them." },
	{ "forget_in_child", forget_in_child, METH_NOARGS,
	  "forget_in_child(): in a forked child, free what scans of other threads had\n"
	  "(their fds, and the kept ones, were closed at the fork)." },
	{ "kept_fds", kept_fds, METH_NOARGS,
	  "kept_fds() -> list: the fds kept open (empty while a scan has them)." },
	{ "kept_bytes", kept_bytes, METH_NOARGS,
	  "kept_bytes() -> int: the kernel memory the kept files are counted as\n"
	  "(0 while a scan has them)." },
	{ "syscall_errno", syscall_errno, METH_O,
	  "syscall_errno(nr) -> int: the errno of syscall(nr, NULL, 0, 0), 0 if it\n"
	  "succeeded: the kernel backend's probe (get_total_mem_stats(NULL, 0, 0) fails\n"
	  "with EINVAL on the patched kernel, ENOSYS elsewhere)." },
	{ NULL, NULL, 0, NULL },
};

static struct PyModuleDef module = {
	PyModuleDef_HEAD_INIT,
	.m_name = "_procscan",
	.m_doc = "The procfs backend's scan of every process, in C, and the kernel probe.",
	.m_size = -1,
	.m_methods = methods,
};

PyMODINIT_FUNC PyInit__procscan(void)
{
	PyObject *mod;
	int err = ps_kept_init();

	if (err) {
		/* Without them a child would keep the parent's files: procfs.py scans in
		 * Python instead. */
		errno = err;
		PyErr_SetFromErrno(PyExc_ImportError);
		return NULL;
	}
	mod = PyModule_Create(&module);
	if (mod && PyModule_AddIntConstant(mod, "KEPT_BYTES_DEFAULT", KEPT_BYTES_DEFAULT)) {
		Py_DECREF(mod);
		return NULL;
	}
	return mod;
}
