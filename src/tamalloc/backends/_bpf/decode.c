// SPDX-License-Identifier: GPL-2.0-only
/*
 * The iterator's records (struct tam_bpf_rec, memstats.h) decoded into what the bpf
 * backend returns: one process a record, a zombie leader given the memory of the first
 * live thread the pass showed (and left out without one, as /proc shows no memory),
 * pages in kB, the OOM score as proc_oom_score() computes it.
 *
 * In C because it was most of a pass's cost in Python (1.4 of 2.7 ms at 1,000
 * processes).  tests/test_bpf_decoding.py checks it against tamalloc.oom_score on
 * records built there.  The records come from the kernel, but a pass read by a caller
 * may be anything: every count is capped (PAGES_CAP) so that no sum, product or kB
 * conversion below can overflow, and a length that is not a whole number of records is
 * an error (another layout, or a truncated read), never a partial decoding.
 */
#include "bpfiter.h"

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <linux/types.h>

#include "memstats.h"

#define N_MEM_FIELDS 11
/* 2^48 pages is 1 EiB of 4 KiB pages: more than any machine, little enough that
 * (4 counts + adj * total / 1000) * 1000 stays far below 2^63. */
#define PAGES_CAP (1ULL << 48)
#define MM_FLAGS (TAM_BPF_OOM_SKIP | TAM_BPF_VFORK | TAM_BPF_EXITING)
#define OOM_SCORE_ADJ_MIN (-1000)
#define OOM_SCORE_ADJ_MAX 1000

struct proc {
	const struct tam_bpf_rec *rec;	/* the leader: pid, comm, adj, cgroup */
	const struct tam_bpf_rec *mem;	/* whose memory: the leader's or its thread's */
	__u32 flags;
};

struct pass {
	struct proc *procs;
	size_t count;
	long long total_pages;	/* capped */
	unsigned long long page_kb;
	unsigned long long page_size;
};

static unsigned long long cap(unsigned long long pages)
{
	return pages < PAGES_CAP ? pages : PAGES_CAP;
}

static int parse_data(PyObject *data, Py_buffer *view)
{
	if (PyObject_GetBuffer(data, view, PyBUF_SIMPLE))
		return -1;
	if (view->len % (Py_ssize_t)sizeof(struct tam_bpf_rec)) {
		PyErr_Format(PyExc_ValueError,
			     "%zd bytes are not whole %zu-byte records: another record layout or a"
			     " truncated read", view->len, sizeof(struct tam_bpf_rec));
		PyBuffer_Release(view);
		return -1;
	}
	return 0;
}

static int parse_page_size(long long page_size, struct pass *pass)
{
	/* Linux's pages are 4, 16 or 64 KiB; up to 1 MiB keeps PAGES_CAP in kB < 2^60. */
	if (page_size < 1024 || page_size > (1LL << 20) || page_size % 1024) {
		PyErr_SetString(PyExc_ValueError, "page_size must be a multiple of 1024 up to 1 MiB");
		return -1;
	}
	pass->page_size = (unsigned long long)page_size;
	pass->page_kb = (unsigned long long)page_size / 1024;
	return 0;
}

/* Index of the first THREAD record of each pid, in an open-addressing table: zombie
 * leaders are rare, but a pass with many must not cost a search each. */
struct stand_ins {
	const struct tam_bpf_rec **slot;
	size_t mask;
};

static size_t slot_of(const struct stand_ins *t, __u32 pid)
{
	size_t i = (pid * 2654435761u) & t->mask;

	while (t->slot[i] && t->slot[i]->pid != pid)
		i = (i + 1) & t->mask;
	return i;
}

/* The records as processes (see the file's note); -1 with MemoryError. */
static int processes(const struct tam_bpf_rec *recs, size_t n, struct pass *pass)
{
	struct stand_ins t = { NULL, 0 };
	size_t i, threads = 0, size = 1;

	pass->procs = malloc((n ? n : 1) * sizeof(*pass->procs));
	if (!pass->procs) {
		PyErr_NoMemory();
		return -1;
	}
	for (i = 0; i < n; i++)
		threads += !!(recs[i].flags & TAM_BPF_THREAD);
	if (threads) {
		while (size < 2 * threads)
			size <<= 1;
		t.slot = calloc(size, sizeof(*t.slot));
		if (!t.slot) {
			free(pass->procs);
			PyErr_NoMemory();
			return -1;
		}
		t.mask = size - 1;
		for (i = 0; i < n; i++) {
			size_t s;

			if (!(recs[i].flags & TAM_BPF_THREAD))
				continue;
			s = slot_of(&t, recs[i].pid);
			if (!t.slot[s])
				t.slot[s] = &recs[i];
		}
	}
	pass->count = 0;
	for (i = 0; i < n; i++) {
		const struct tam_bpf_rec *rec = &recs[i];
		struct proc *p = &pass->procs[pass->count];

		if (rec->flags & TAM_BPF_THREAD)
			continue;
		p->rec = rec;
		p->mem = rec;
		p->flags = rec->flags;
		if (rec->flags & TAM_BPF_NO_MM) {
			const struct tam_bpf_rec *live = t.slot ? t.slot[slot_of(&t, rec->pid)] : NULL;

			if (!live)
				continue;	/* a zombie: /proc shows it no memory */
			p->mem = live;
			/* What is about the mm (exiting: as the OOM killer sees it, through
			 * the thread that holds the mm) is the live thread's. */
			p->flags = (rec->flags & ~(TAM_BPF_NO_MM | MM_FLAGS)) | (live->flags & MM_FLAGS);
		}
		pass->count++;
	}
	free(t.slot);
	return 0;
}

/* oom_badness()'s LONG_MIN: global init, OOM_SCORE_ADJ_MIN, the reaper done, vfork. */
static int unkillable(const struct proc *p)
{
	return p->rec->oom_score_adj == OOM_SCORE_ADJ_MIN ||
	       (p->flags & (TAM_BPF_GLOBAL_INIT | TAM_BPF_OOM_SKIP | TAM_BPF_VFORK));
}

static unsigned long long rss_pages(const struct proc *p)
{
	return cap(p->mem->anon) + cap(p->mem->file) + cap(p->mem->shmem);
}

/* proc_oom_score(): 0 when unkillable, else (1000 + points * 1000 / totalpages) * 2 / 3
 * in C's truncating division, points = oom_badness(). */
static long oom_score(const struct proc *p, const struct pass *pass)
{
	long long adj = p->rec->oom_score_adj, total = pass->total_pages ? pass->total_pages : 1;
	long long points;

	if (unkillable(p))
		return 0;
	if (adj < OOM_SCORE_ADJ_MIN)
		adj = OOM_SCORE_ADJ_MIN;
	if (adj > OOM_SCORE_ADJ_MAX)
		adj = OOM_SCORE_ADJ_MAX;
	points = (long long)(rss_pages(p) + cap(p->mem->swap) +
			     cap(p->mem->pgtables) / pass->page_size) +
		 adj * (pass->total_pages / 1000);
	return (long)((1000 + points * 1000 / total) * 2 / 3);
}

static PyObject *name_of(const struct tam_bpf_rec *rec)
{
	const char *end = memchr(rec->comm, '\0', sizeof(rec->comm));
	Py_ssize_t len = end ? end - rec->comm : (Py_ssize_t)sizeof(rec->comm);

	return PyUnicode_DecodeUTF8(rec->comm, len, "replace");
}

/* A tuple subclass instance (a NamedTuple) of n items, stealing them; NULL if any is. */
static PyObject *build(PyTypeObject *cls, PyObject **items, int n)
{
	PyObject *obj = cls ? cls->tp_alloc(cls, n) : PyTuple_New(n);
	int i;

	for (i = 0; i < n; i++) {
		if (!items[i] || !obj) {
			Py_XDECREF(obj);
			for (i = 0; i < n; i++)
				Py_XDECREF(items[i]);
			return NULL;
		}
	}
	for (i = 0; i < n; i++)
		PyTuple_SET_ITEM(obj, i, items[i]);
	return obj;
}

static PyObject *mem_stats_of(PyTypeObject *cls, const struct proc *p, const struct pass *pass)
{
	unsigned long long kb = pass->page_kb;
	unsigned long long reserved = cap(p->mem->total_vm) * kb;
	unsigned long long committed = rss_pages(p) * kb;
	PyObject *items[N_MEM_FIELDS];

	items[0] = PyLong_FromUnsignedLong(p->rec->pid);
	items[1] = name_of(p->rec);
	items[2] = PyLong_FromUnsignedLongLong(reserved);
	items[3] = PyLong_FromUnsignedLongLong(committed);
	/* As committed_pct(): Python's committed / reserved * 100 (exact in a double). */
	items[4] = PyFloat_FromDouble(reserved ? (double)committed / (double)reserved * 100.0 : 0.0);
	items[5] = PyLong_FromUnsignedLongLong(cap(p->mem->anon) * kb);
	items[6] = PyLong_FromUnsignedLongLong(cap(p->mem->file) * kb);
	items[7] = PyLong_FromUnsignedLongLong(cap(p->mem->shmem) * kb);
	items[8] = PyLong_FromUnsignedLongLong(cap(p->mem->swap) * kb);
	items[9] = PyLong_FromLong(oom_score(p, pass));
	items[10] = PyLong_FromLong(p->rec->oom_score_adj);
	return build(cls, items, N_MEM_FIELDS);
}

static PyObject *oom_row_of(const struct proc *p, const struct pass *pass)
{
	PyObject *items[12];

	items[0] = PyLong_FromUnsignedLong(p->rec->pid);
	items[1] = name_of(p->rec);
	items[2] = PyLong_FromUnsignedLongLong(p->rec->cgroup_id);
	items[3] = PyLong_FromUnsignedLongLong(rss_pages(p) * pass->page_kb);
	items[4] = PyLong_FromUnsignedLongLong(cap(p->mem->swap) * pass->page_kb);
	items[5] = PyLong_FromUnsignedLongLong(cap(p->mem->pgtables) >> 10);
	items[6] = PyLong_FromLong(oom_score(p, pass));
	items[7] = PyLong_FromLong(p->rec->oom_score_adj);
	items[8] = PyBool_FromLong(unkillable(p));
	items[9] = PyBool_FromLong(!!(p->flags & TAM_BPF_OOM_VICTIM));
	items[10] = PyBool_FromLong(!!(p->flags & TAM_BPF_OOM_ORIGIN));
	/* The leader exiting with its mm (task_will_free_mem()), the reaper not done with
	 * it; a coredump or another process on the mm, which would make the kernel kill
	 * after all, are not in the record. */
	items[11] = PyBool_FromLong((p->flags & TAM_BPF_EXITING) && !(p->flags & TAM_BPF_OOM_SKIP));
	return build(NULL, items, 12);
}

/* data into pass (its processes); the buffer is released by the caller. */
static int start(PyObject *data, Py_buffer *view, long long total_pages, long long page_size,
		 struct pass *pass)
{
	if (parse_page_size(page_size, pass))
		return -1;
	if (total_pages < 0) {
		PyErr_SetString(PyExc_ValueError, "total_pages must not be negative");
		return -1;
	}
	pass->total_pages = (long long)cap((unsigned long long)total_pages);
	if (parse_data(data, view))
		return -1;
	if (processes(view->buf, (size_t)view->len / sizeof(struct tam_bpf_rec), pass)) {
		PyBuffer_Release(view);
		return -1;
	}
	return 0;
}

static PyObject *decode_list(PyObject *data, PyTypeObject *cls, long long total_pages,
			     long long page_size)
{
	struct pass pass;
	Py_buffer view;
	PyObject *list;
	size_t i;

	if (start(data, &view, total_pages, page_size, &pass))
		return NULL;
	list = PyList_New((Py_ssize_t)pass.count);
	for (i = 0; list && i < pass.count; i++) {
		PyObject *item = cls ? mem_stats_of(cls, &pass.procs[i], &pass)
				     : oom_row_of(&pass.procs[i], &pass);

		if (!item)
			Py_CLEAR(list);
		else
			PyList_SET_ITEM(list, (Py_ssize_t)i, item);
	}
	free(pass.procs);
	PyBuffer_Release(&view);
	return list;
}

PyObject *bpfiter_mem_stats(PyObject *self, PyObject *args)
{
	PyObject *data, *cls;
	long long total_pages, page_size;

	(void)self;
	if (!PyArg_ParseTuple(args, "OO!LL", &data, &PyType_Type, &cls, &total_pages, &page_size))
		return NULL;
	if (!PyType_IsSubtype((PyTypeObject *)cls, &PyTuple_Type)) {
		PyErr_SetString(PyExc_TypeError, "mem_stats() needs a tuple subclass");
		return NULL;
	}
	return decode_list(data, (PyTypeObject *)cls, total_pages, page_size);
}

PyObject *bpfiter_oom_rows(PyObject *self, PyObject *args)
{
	PyObject *data;
	long long total_pages, page_size;

	(void)self;
	if (!PyArg_ParseTuple(args, "OLL", &data, &total_pages, &page_size))
		return NULL;
	return decode_list(data, NULL, total_pages, page_size);
}

static unsigned long long add_sat(unsigned long long a, unsigned long long b)
{
	return a + b < a ? ULLONG_MAX : a + b;
}

PyObject *bpfiter_totals(PyObject *self, PyObject *args)
{
	unsigned long long reserved = 0, committed = 0, swap = 0;
	long long page_size;
	struct pass pass;
	Py_buffer view;
	PyObject *data;
	size_t i;

	(void)self;
	if (!PyArg_ParseTuple(args, "OL", &data, &page_size))
		return NULL;
	if (start(data, &view, 0, page_size, &pass))
		return NULL;
	for (i = 0; i < pass.count; i++) {
		const struct proc *p = &pass.procs[i];

		reserved = add_sat(reserved, cap(p->mem->total_vm) * pass.page_kb);
		committed = add_sat(committed, rss_pages(p) * pass.page_kb);
		swap = add_sat(swap, cap(p->mem->swap) * pass.page_kb);
	}
	free(pass.procs);
	PyBuffer_Release(&view);
	return Py_BuildValue("(nKKK)", (Py_ssize_t)pass.count, reserved, committed, swap);
}
