/*
 * tamalloc._mapping.Mapping: private anonymous memory that exports the buffer
 * protocol, the base of tamalloc.Buffer.
 *
 * The mmap module cannot own a mapping made elsewhere (the tamalloc system call's, a
 * 2 MiB-aligned one for transparent huge pages), and Python 3.11 classes cannot export
 * buffers, so this type does both in a few lines of the documented C API:
 *
 *   - Mapping(length) maps length bytes, private, anonymous and MAP_NORESERVE (lazily
 *     zero-filled, not charged to the commit limit), as mmap.mmap(-1, length) would;
 *   - adopt(cls, address, length) makes one that owns the mapping already at address:
 *     the caller hands that range over, and the object unmaps it on close.
 *
 * As with mmap.mmap, the exported views are counted, and close() raises BufferError
 * while one exists, so no view outlives the memory; the object cannot be resized.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

typedef struct {
	PyObject_HEAD
	char *data; /* NULL once closed */
	Py_ssize_t size; /* len(): the length asked for */
	size_t mapped; /* size rounded up to whole pages: what munmap gives back */
	Py_ssize_t exports; /* buffer views alive */
	PyObject *weakrefs; /* weak references work, as on mmap.mmap */
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

/* length rounded up to whole pages, or 0 when that would not fit a Py_ssize_t. */
static size_t page_length(Py_ssize_t length)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);

	if (length <= 0 || (size_t)length > (size_t)PY_SSIZE_T_MAX - page)
		return 0;
	return ((size_t)length + page - 1) & ~(page - 1);
}

static PyObject *Mapping_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
	static char *kwlist[] = { "length", NULL };
	Py_ssize_t length;
	size_t mapped;
	Mapping *self;
	char *data;

	if (!PyArg_ParseTupleAndKeywords(args, kwds, "n:Mapping", kwlist, &length))
		return NULL;
	if (length <= 0) {
		PyErr_SetString(PyExc_ValueError, "length must be positive");
		return NULL;
	}
	mapped = page_length(length);
	if (mapped == 0) {
		errno = ENOMEM;
		return PyErr_SetFromErrno(PyExc_OSError);
	}
	self = (Mapping *)type->tp_alloc(type, 0);
	if (self == NULL)
		return NULL;
	data = mmap(NULL, mapped, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
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
	if (self->weakrefs != NULL)
		PyObject_ClearWeakRefs((PyObject *)self);
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
 * adopt(cls, address, length): a module function rather than a classmethod, so that
 * Buffer does not offer it. The caller hands over [address, address + length rounded
 * up to pages): the new object unmaps that range on close, whatever it holds. msync
 * (a no-op on anonymous memory) refuses a range that is not wholly mapped (ENOMEM),
 * so a stray address is an error here rather than an unmap of nothing, or of a later
 * mapping, at close.
 */
static PyObject *adopt(PyObject *Py_UNUSED(module), PyObject *args)
{
	PyTypeObject *type;
	PyObject *address_obj;
	Py_ssize_t length;
	size_t mapped, page = (size_t)sysconf(_SC_PAGESIZE);
	Mapping *self;
	void *address;

	if (!PyArg_ParseTuple(args, "O!On:adopt", &PyType_Type, &type, &address_obj, &length))
		return NULL;
	if (!PyType_IsSubtype(type, &MappingType)) {
		PyErr_SetString(PyExc_TypeError, "adopt() makes Mapping objects only");
		return NULL;
	}
	address = PyLong_AsVoidPtr(address_obj);
	if (address == NULL && PyErr_Occurred())
		return NULL;
	mapped = page_length(length);
	if (address == NULL || (uintptr_t)address % page != 0 || mapped == 0 ||
	    (uintptr_t)address > UINTPTR_MAX - mapped) {
		PyErr_SetString(PyExc_ValueError, "adopt() needs a page-aligned address and"
				" a positive length");
		return NULL;
	}
	if (msync(address, mapped, MS_ASYNC) != 0)
		return PyErr_SetFromErrno(PyExc_OSError);
	self = (Mapping *)type->tp_alloc(type, 0);
	if (self == NULL)
		return NULL;
	self->data = address;
	self->size = length;
	self->mapped = mapped;
	return (PyObject *)self;
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
	{ "address", (getter)Mapping_get_address, NULL,
	  "Start address of the mapping (2 MiB aligned when huge).", NULL },
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
	.tp_weaklistoffset = offsetof(Mapping, weakrefs),
	.tp_doc = "Mapping(length): private anonymous memory exporting the buffer protocol.",
	.tp_methods = Mapping_methods,
	.tp_getset = Mapping_getset,
	.tp_new = Mapping_new,
};

static PyMethodDef module_methods[] = {
	{ "adopt", adopt, METH_VARARGS,
	  "adopt(cls, address, length): a new cls (a Mapping type) that owns the mapping\n"
	  "at address, length bytes rounded up to pages; it unmaps them on close." },
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
