/* What /proc files look like: how one is read whole, and what a status says. */
#include "parse.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const struct {
	const char *key;
	size_t len;
} memory_keys[N_MEMORY] = {
	{ "VmSize:", 7 }, { "VmRSS:", 6 }, { "RssAnon:", 8 },
	{ "RssFile:", 8 }, { "RssShmem:", 9 }, { "VmSwap:", 7 },
};

/*
 * Whole file into buf (NUL-terminated) from offset 0; returns 0 or an errno. These
 * files are produced whole by one show() (seq_file single_open, or
 * simple_read_from_buffer for oom_score_adj), so a read that does not fill the buffer
 * got all of it and no second read for EOF is needed; only a status longer than the
 * buffer (a huge Groups line) reads on, into a bigger one. Python's _read and _scan
 * follow the same rule.
 */
int ps_read_whole(int fd, struct buffer *buf, size_t *len)
{
	size_t used = 0;
	int err = 0;

	for (;;) {
		size_t room = buf->size - used - 1;
		ssize_t n = pread(fd, buf->data + used, room, (off_t)used);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			err = errno;
			break;
		}
		used += n;
		if ((size_t)n < room)
			break;
		if (buf->size - used < 2) {
			char *bigger = realloc(buf->data, buf->size * 2);

			if (!bigger) {
				err = ENOMEM;
				break;
			}
			buf->data = bigger;
			buf->size *= 2;
		}
	}
	buf->data[used] = '\0';
	*len = used;
	return err;
}

int ps_parse_long(const struct buffer *buf, long *value)
{
	char *end;

	errno = 0;
	*value = strtol(buf->data, &end, 10);
	return errno || end == buf->data ? EINVAL : 0;
}

/* The Name line, with the kernel's escapes of "\n" and "\\" undone. */
void ps_parse_name(const char *status, struct record *rec)
{
	const char *p = status;
	size_t n = 0;

	if (strncmp(p, "Name:\t", 6) == 0)
		p += 6;
	while (*p && *p != '\n' && n < sizeof(rec->name)) {
		if (p[0] == '\\' && (p[1] == 'n' || p[1] == '\\')) {
			rec->name[n++] = p[1] == 'n' ? '\n' : '\\';
			p += 2;
		} else {
			rec->name[n++] = *p++;
		}
	}
	rec->name_len = n;
}

static const char *next_line(const char *line)
{
	line = strchr(line, '\n');
	return line ? line + 1 : NULL;
}

/* Returns 1 when status has an address space (a VmSize line), else 0. */
int ps_parse_memory(const char *status, struct record *rec)
{
	const unsigned int all = (1u << N_MEMORY) - 1;
	unsigned int seen = 0;
	const char *line;

	memset(rec->memory, 0, sizeof(rec->memory));
	/* The rest of status (signals, capabilities, cpusets) is passed over at once. */
	for (line = status; line && seen != all; line = next_line(line)) {
		int i;

		if (line[0] != 'V' && line[0] != 'R')
			continue;
		for (i = 0; i < N_MEMORY; i++) {
			if (strncmp(line, memory_keys[i].key, memory_keys[i].len) == 0) {
				rec->memory[i] = strtoull(line + memory_keys[i].len, NULL, 10);
				seen |= 1u << i;
				break;
			}
		}
	}
	return (seen & (1u << F_SIZE)) != 0;
}

/* "Threads:" of a status; 0 when absent. */
long ps_parse_threads(const char *status)
{
	const char *p = strstr(status, "\nThreads:");

	return p ? strtol(p + 9, NULL, 10) : 0;
}
