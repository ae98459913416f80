/*
 * tamalloc._mapping.Mapping: private anonymous memory (MAP_NORESERVE, so lazily
 * zero-filled and not charged to the commit limit) that exports the buffer protocol,
 * the base of tamalloc.Buffer.
 *
 * The mmap module cannot map at an alignment or take over a mapping made elsewhere
 * (the tamalloc system call's), and Python 3.11 classes cannot export buffers, so this
 * type does both in a few lines of the documented C API:
 *
 *   - Mapping(length, align) maps length bytes at an address aligned to align (a
 *     power of two; 0 for the page size) by mapping align bytes more and unmapping
 *     the unaligned head and tail;
 *   - move_into(mapping, address) moves the mapping at address onto its pages with
 *     mremap(MREMAP_FIXED): the mapping keeps its flags (MAP_NORESERVE, MADV_HUGEPAGE)
 *     and its pages, and this object then unmaps it, exactly as it would its own.
 *
 * An object only ever unmaps the range it mapped itself. As with mmap.mmap, the
 * exported views are counted, and close() raises BufferError while one exists, so no
 * view outlives the memory; the object cannot be resized.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000 /* Linux 4.17; older kernels take it as a hint */
#endif

#define PROT (PROT_READ | PROT_WRITE)
#define FLAGS (MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE)
/* The largest alignment asked for: huge pages are 2 MiB, 1 GiB on some machines. */
#define MAX_ALIGN ((size_t)1 << 30)

typedef struct {
	PyObject_HEAD
	char *data; /* NULL once closed */
	Py_ssize_t size; /* len(): the length asked for */
	size_t mapped; /* size rounded up to whole pages: what munmap gives back */
	Py_ssize_t exports; /* buffer views alive */
} Mapping;

static PyTypeObject MappingType;

static const char closed_msg[] = "operation on a closed tamalloc buffer";

static int check_open(Mapping *self)
{
	if (self->data == NULL) {
		PyErr_SetString(PyExc_ValueError, closed_msg);
		return -1;
	}
	return 0;
}

/* Map at an aligned address: align bytes more, then give back the head and tail. */
static char *map_aligned(size_t mapped, size_t align)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	size_t extra = align > page ? align : 0;
	char *raw = mmap(NULL, mapped + extra, PROT, FLAGS, -1, 0);
	uintptr_t start;
	size_t head, tail;

	if (raw == MAP_FAILED || extra == 0)
		return raw;
	start = ((uintptr_t)raw + align - 1) & ~((uintptr_t)align - 1);
	head = start - (uintptr_t)raw;
	tail = extra - head;
	/* Each trim splits the mapping, and so can fail at vm.max_map_count (ENOMEM):
	 * then everything is given back rather than a half-trimmed mapping kept. */
	if (head && munmap(raw, head) != 0) {
		int err = errno;

		munmap(raw, mapped + extra);
		errno = err;
		return MAP_FAILED;
	}
	if (tail && munmap((char *)start + mapped, tail) != 0) {
		int err = errno;

		munmap((char *)start, mapped + tail);
		errno = err;
		return MAP_FAILED;
	}
	return (char *)start;
}

static PyObject *Mapping_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
	static char *kwlist[] = { "length", "align", NULL };
	Py_ssize_t length, align = 0;
	size_t page = (size_t)sysconf(_SC_PAGESIZE), mapped;
	Mapping *self;
	char *data;

	if (!PyArg_ParseTupleAndKeywords(args, kwds, "n|n:Mapping", kwlist, &length, &align))
		return NULL;
	if (length <= 0) {
		PyErr_SetString(PyExc_ValueError, "length must be positive");
		return NULL;
	}
	if (align < 0 || (size_t)align > MAX_ALIGN || (align & (align - 1)) != 0) {
		PyErr_SetString(PyExc_ValueError, "align must be 0 or a power of two up to 1 GiB");
		return NULL;
	}
	/* Py_ssize_t fits in size_t; the extra page and alignment must fit too. */
	if ((size_t)length > (size_t)PY_SSIZE_T_MAX - page - MAX_ALIGN) {
		errno = ENOMEM;
		PyErr_SetFromErrno(PyExc_OSError);
		return NULL;
	}
	mapped = ((size_t)length + page - 1) & ~(page - 1);
	self = (Mapping *)type->tp_alloc(type, 0);
	if (self == NULL)
		return NULL;
	data = map_aligned(mapped, (size_t)align);
	if (data == MAP_FAILED) {
		PyErr_SetFromErrno(PyExc_OSError);
		Py_DECREF(self);
		return NULL;
	}
	self->data = data;
	self->size = length;
	self->mapped = mapped;
	return (PyObject *)self;
}

static void Mapping_dealloc(Mapping *self)
{
	/* No view can be alive: each holds a reference to this object. */
	if (self->data != NULL)
		munmap(self->data, self->mapped);
	Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Mapping_close(Mapping *self, PyObject *Py_UNUSED(ignored))
{
	if (self->exports > 0) {
		PyErr_SetString(PyExc_BufferError,
				"cannot close a tamalloc buffer while views of it exist"
				" (numpy arrays, memoryviews): delete them first");
		return NULL;
	}
	if (self->data != NULL) {
		munmap(self->data, self->mapped);
		self->data = NULL;
	}
	Py_RETURN_NONE;
}

/*
 * move_into(mapping, address): a module function rather than a method, so that
 * Buffer does not inherit it. The caller gives up whatever is mapped in [address,
 * address + mapped): since Linux 6.17 mremap moves every mapping in that range, where
 * older kernels refuse a range that is not within one mapping (EFAULT).
 */
static PyObject *move_into(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
	Mapping *self;
	void *source;
	void *moved;
	int err;

	if (nargs != 2 || !PyObject_TypeCheck(args[0], &MappingType)) {
		PyErr_SetString(PyExc_TypeError, "move_into() takes a Mapping and an address");
		return NULL;
	}
	self = (Mapping *)args[0];
	source = PyLong_AsVoidPtr(args[1]);
	if (source == NULL && PyErr_Occurred())
		return NULL;
	/* After the conversion, which may have run Python code (__index__). */
	if (check_open(self) < 0)
		return NULL;
	if (self->exports > 0) {
		PyErr_SetString(PyExc_BufferError, "cannot replace the memory of an exported buffer");
		return NULL;
	}
	moved = mremap(source, self->mapped, self->mapped, MREMAP_MAYMOVE | MREMAP_FIXED,
		       self->data);
	if (moved != MAP_FAILED)
		return Py_NewRef(Py_None);
	err = errno;
	/*
	 * mremap unmaps the target before it looks at the source, so a failure (a source
	 * that is not one mapping of this length: EFAULT, EINVAL) may leave this object's
	 * range unmapped. Map it again where it was (zero-filled: the buffers moved into
	 * are new ones, their content is nothing yet); if the range is occupied, the failure
	 * came before the unmap and the range is still this object's own. (The GIL is
	 * held throughout, so only a thread outside Python could map there meanwhile.)
	 */
	moved = mmap(self->data, self->mapped, PROT, FLAGS | MAP_FIXED_NOREPLACE, -1, 0);
	if (moved == MAP_FAILED && errno != EEXIST)
		self->data = NULL; /* a hole now, not this object's to unmap later: closed */
	else if (moved != MAP_FAILED && moved != self->data)
		munmap(moved, self->mapped); /* a kernel without NOREPLACE took it as a hint */
	errno = err;
	return PyErr_SetFromErrno(PyExc_OSError);
}

static PyObject *Mapping_get_closed(Mapping *self, void *Py_UNUSED(closure))
{
	return PyBool_FromLong(self->data == NULL);
}

static PyObject *Mapping_get_address(Mapping *self, void *Py_UNUSED(closure))
{
	if (check_open(self) < 0)
		return NULL;
	return PyLong_FromVoidPtr(self->data);
}

static Py_ssize_t Mapping_length(Mapping *self)
{
	if (check_open(self) < 0)
		return -1;
	return self->size;
}

/* An index in range(size), negative ones counting from the end; -1 on error. */
static Py_ssize_t item_index(Mapping *self, PyObject *key)
{
	Py_ssize_t i = PyNumber_AsSsize_t(key, PyExc_IndexError);

	if (i == -1 && PyErr_Occurred())
		return -1;
	/* __index__ may have run Python code, closing this object. */
	if (check_open(self) < 0)
		return -1;
	if (i < 0)
		i += self->size;
	if (i < 0 || i >= self->size) {
		PyErr_SetString(PyExc_IndexError, "tamalloc buffer index out of range");
		return -1;
	}
	return i;
}

static PyObject *Mapping_subscript(Mapping *self, PyObject *key)
{
	Py_ssize_t start, stop, step, count, i;
	PyObject *result;
	char *out;

	if (check_open(self) < 0)
		return NULL;
	if (PyIndex_Check(key)) {
		i = item_index(self, key);
		return i < 0 ? NULL : PyLong_FromLong((unsigned char)self->data[i]);
	}
	if (!PySlice_Check(key)) {
		PyErr_Format(PyExc_TypeError, "tamalloc buffer indices must be integers or slices,"
			     " not %.200s", Py_TYPE(key)->tp_name);
		return NULL;
	}
	if (PySlice_Unpack(key, &start, &stop, &step) < 0 || check_open(self) < 0)
		return NULL;
	count = PySlice_AdjustIndices(self->size, &start, &stop, step);
	if (step == 1)
		return PyBytes_FromStringAndSize(self->data + start, count);
	result = PyBytes_FromStringAndSize(NULL, count);
	if (result == NULL)
		return NULL;
	out = PyBytes_AS_STRING(result);
	for (i = 0; i < count; i++, start += step)
		out[i] = self->data[start];
	return result;
}

static int Mapping_ass_subscript(Mapping *self, PyObject *key, PyObject *value)
{
	Py_ssize_t start, stop, step, count, i;
	Py_buffer source;
	int overflow;
	long byte;

	if (check_open(self) < 0)
		return -1;
	if (value == NULL) {
		PyErr_SetString(PyExc_TypeError, "tamalloc buffer items cannot be deleted");
		return -1;
	}
	if (PyIndex_Check(key)) {
		if (!PyIndex_Check(value)) {
			PyErr_SetString(PyExc_TypeError, "a tamalloc buffer item must be an int");
			return -1;
		}
		byte = PyLong_AsLongAndOverflow(value, &overflow);
		if (byte == -1 && PyErr_Occurred())
			return -1;
		if (overflow || byte < 0 || byte > 255) {
			PyErr_SetString(PyExc_ValueError, "byte must be in range(0, 256)");
			return -1;
		}
		i = item_index(self, key);
		if (i < 0)
			return -1;
		self->data[i] = (char)byte;
		return 0;
	}
	if (!PySlice_Check(key)) {
		PyErr_Format(PyExc_TypeError, "tamalloc buffer indices must be integers or slices,"
			     " not %.200s", Py_TYPE(key)->tp_name);
		return -1;
	}
	if (PySlice_Unpack(key, &start, &stop, &step) < 0)
		return -1;
	if (PyObject_GetBuffer(value, &source, PyBUF_SIMPLE) < 0)
		return -1;
	/* Both conversions may have run Python code, closing this object. */
	if (check_open(self) < 0) {
		PyBuffer_Release(&source);
		return -1;
	}
	count = PySlice_AdjustIndices(self->size, &start, &stop, step);
	if (source.len != count) {
		PyBuffer_Release(&source);
		PyErr_SetString(PyExc_IndexError,
				"tamalloc buffer slice assignment is wrong size");
		return -1;
	}
	if (step == 1) {
		/* The source may be a view of this very buffer. */
		memmove(self->data + start, source.buf, (size_t)count);
	} else {
		for (i = 0; i < count; i++, start += step)
			self->data[start] = ((const char *)source.buf)[i];
	}
	PyBuffer_Release(&source);
	return 0;
}

static int Mapping_getbuffer(Mapping *self, Py_buffer *view, int flags)
{
	if (check_open(self) < 0) {
		view->obj = NULL;
		return -1;
	}
	if (PyBuffer_FillInfo(view, (PyObject *)self, self->data, self->size, 0, flags) < 0)
		return -1;
	self->exports++;
	return 0;
}

static void Mapping_releasebuffer(Mapping *self, Py_buffer *Py_UNUSED(view))
{
	self->exports--;
}

static PyMethodDef Mapping_methods[] = {
	{ "close", (PyCFunction)Mapping_close, METH_NOARGS,
	  "Unmap the memory; closing twice is harmless. BufferError while views exist." },
	{ NULL, NULL, 0, NULL },
};

static PyGetSetDef Mapping_getset[] = {
	{ "closed", (getter)Mapping_get_closed, NULL, "Whether close() was called.", NULL },
	{ "address", (getter)Mapping_get_address, NULL, "Start address of the mapping (2 MiB aligned when huge).", NULL },
	{ NULL, NULL, NULL, NULL, NULL },
};

static PyMappingMethods Mapping_as_mapping = {
	.mp_length = (lenfunc)Mapping_length,
	.mp_subscript = (binaryfunc)Mapping_subscript,
	.mp_ass_subscript = (objobjargproc)Mapping_ass_subscript,
};

static PyBufferProcs Mapping_as_buffer = {
	.bf_getbuffer = (getbufferproc)Mapping_getbuffer,
	.bf_releasebuffer = (releasebufferproc)Mapping_releasebuffer,
};

static PyTypeObject MappingType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "tamalloc._mapping.Mapping",
	.tp_basicsize = sizeof(Mapping),
	.tp_dealloc = (destructor)Mapping_dealloc,
	.tp_as_mapping = &Mapping_as_mapping,
	.tp_as_buffer = &Mapping_as_buffer,
	.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
	.tp_doc = "Mapping(length, align=0): private anonymous memory exporting the buffer"
		  " protocol.",
	.tp_methods = Mapping_methods,
	.tp_getset = Mapping_getset,
	.tp_new = Mapping_new,
};

static PyMethodDef module_methods[] = {
	{ "move_into", (PyCFunction)(void (*)(void))move_into, METH_FASTCALL,
	  "move_into(mapping, address): move what is mapped from address on, the Mapping's\n"
	  "length rounded up to pages, onto the Mapping's memory (mremap MREMAP_FIXED)." },
	{ NULL, NULL, 0, NULL },
};

static struct PyModuleDef module = {
	PyModuleDef_HEAD_INIT,
	.m_methods = module_methods,
	.m_name = "tamalloc._mapping",
	.m_doc = "Anonymous memory that exports the buffer protocol (tamalloc.Buffer's base).",
	.m_size = -1,
};

PyMODINIT_FUNC PyInit__mapping(void)
{
	PyObject *m;

	if (PyType_Ready(&MappingType) < 0)
		return NULL;
	m = PyModule_Create(&module);
	if (m == NULL)
		return NULL;
	if (PyModule_AddObjectRef(m, "Mapping", (PyObject *)&MappingType) < 0) {
		Py_DECREF(m);
		return NULL;
	}
	return m;
}
