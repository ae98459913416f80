/*
 * What the parts of the _procscan extension share. The extension is the procfs
 * backend's scan of every process, in C:
 *
 *   parse.c   what /proc files look like: a file read whole, the fields of status
 *   kept.c    the files a full scan keeps open for the next, and fork() handling
 *   scan.c    one scan: the records read on up to MAX_THREADS threads, /proc listed
 *   module.c  the Python module: arguments, the records as objects, kept_fds & co,
 *             and syscall_errno, the kernel backend's probe
 *
 * A name shared between them starts with ps_ and is declared between the pragmas in
 * the headers, hidden: the extension is a shared object, where a name of default
 * visibility could be bound to a library's symbol of the same name loaded before
 * it. Everything else is static.
 */
#ifndef PROCSCAN_H
#define PROCSCAN_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* status prints at most 64 bytes of a name (a kthread's), each escaped into two. */
#define NAME_MAX_BYTES 256
#define MAX_SKIP_ERRNOS 16

enum { F_SIZE, F_RSS, F_ANON, F_FILE, F_SHMEM, F_SWAP, N_MEMORY };

struct record {
	long pid;
	int state;		/* READ_OK, or skipped */
	char name[NAME_MAX_BYTES];
	size_t name_len;
	unsigned long long memory[N_MEMORY];
	long oom_score;
	long oom_score_adj;
};

enum { READ_OK, READ_NO_MM, READ_SKIPPED };

struct buffer {
	char *data;
	size_t size;
};

#endif
