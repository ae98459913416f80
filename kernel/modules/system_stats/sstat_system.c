// SPDX-License-Identifier: GPL-2.0
/*
 * system_stats: the system figures (memory, CPU times, the file system of
 * /) and the two files that print them, /proc/system_stats and
 * /proc/system_stats.json.
 *
 * Where fs/proc/stat.c computes CPU times with helpers that are not
 * exported (nsec_to_clock_t(), get_idle_time()), the same computation is
 * repeated here so that the numbers agree.
 */

#include <linux/cpumask.h>
#include <linux/fs.h>
#include <linux/fs_struct.h>
#include <linux/kernel.h>
#include <linux/kernel_stat.h>
#include <linux/math64.h>
#include <linux/mm.h>
#include <linux/overflow.h>
#include <linux/path.h>
#include <linux/proc_fs.h>
#include <linux/sched.h>
#include <linux/seq_file.h>
#include <linux/statfs.h>
#include <linux/swap.h>
#include <linux/tick.h>
#include <linux/time64.h>
#include <linux/types.h>
#include <linux/vmstat.h>

#include "system_stats.h"

#define SSTAT_KB(pages)	((u64)(pages) << (PAGE_SHIFT - 10))

/* ------------------------------------------------------------------ */
/* Memory                                                              */
/* ------------------------------------------------------------------ */

struct sstat_mem {
	u64 total_kb;
	u64 used_kb;
	u64 free_kb;
	u64 available_kb;
	u64 buffers_kb;
	u64 cached_kb;
};

/* The same values as MemTotal, MemFree, ... in fs/proc/meminfo.c. */
static void sstat_mem_fetch(struct sstat_mem *mem)
{
	struct sysinfo i;
	long available;
	long cached;

	si_meminfo(&i);
	available = si_mem_available();
	cached = global_node_page_state(NR_FILE_PAGES) -
		 total_swapcache_pages() - i.bufferram;
	if (cached < 0)
		cached = 0;

	mem->total_kb = SSTAT_KB(i.totalram);
	mem->free_kb = SSTAT_KB(i.freeram);
	mem->available_kb = SSTAT_KB(available);
	mem->buffers_kb = SSTAT_KB(i.bufferram);
	mem->cached_kb = SSTAT_KB(cached);
	/* As procps free(1) 4.x: used = total - available. */
	if (mem->total_kb > mem->available_kb)
		mem->used_kb = mem->total_kb - mem->available_kb;
	else
		mem->used_kb = 0;
}

/* ------------------------------------------------------------------ */
/* CPU                                                                 */
/* ------------------------------------------------------------------ */

enum {
	SSTAT_CPU_USER,
	SSTAT_CPU_NICE,
	SSTAT_CPU_SYSTEM,
	SSTAT_CPU_IDLE,
	SSTAT_CPU_IOWAIT,
	SSTAT_CPU_IRQ,
	SSTAT_CPU_SOFTIRQ,
	SSTAT_CPU_STEAL,
	SSTAT_CPU_NR,
};

static const char * const sstat_cpu_names[SSTAT_CPU_NR] = {
	"user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
};

/*
 * nsec_to_clock_t() of kernel/time/time.c, which is not exported.  Where
 * that multiplies before dividing (USER_HZ not a divisor of NSEC_PER_SEC,
 * not x86), the product is kept in 96 bits here so that it cannot wrap: the
 * multiplier is below the divisor, so the quotient fits and cannot trap.
 */
static u64 sstat_nsec_to_clock_t(u64 x)
{
#if (NSEC_PER_SEC % USER_HZ) == 0
	return div_u64(x, NSEC_PER_SEC / USER_HZ);
#elif (USER_HZ % 512) == 0
	return mul_u64_u32_div(x, USER_HZ, NSEC_PER_SEC);
#else
	return mul_u64_u32_div(x, 9,
			       (9ull * NSEC_PER_SEC + (USER_HZ / 2)) / USER_HZ);
#endif
}

/* Microseconds of idle accounting in nanoseconds, saturated. */
static u64 sstat_usecs_to_ns(u64 usecs)
{
	u64 ns;

	return check_mul_overflow(usecs, (u64)NSEC_PER_USEC, &ns) ? U64_MAX : ns;
}

/*
 * get_idle_time() and get_iowait_time() of fs/proc/stat.c (static there).
 * Architectures with arch_idle_time() (s390) fall back to the raw counters.
 */
static u64 sstat_idle_ns(const struct kernel_cpustat *kcs, int cpu)
{
	u64 usecs = -1ULL;

#ifndef arch_idle_time
	if (cpu_online(cpu))
		usecs = get_cpu_idle_time_us(cpu, NULL);
#endif
	if (usecs == -1ULL)
		return kcs->cpustat[CPUTIME_IDLE];
	return sstat_usecs_to_ns(usecs);
}

static u64 sstat_iowait_ns(const struct kernel_cpustat *kcs, int cpu)
{
	u64 usecs = -1ULL;

#ifndef arch_idle_time
	if (cpu_online(cpu))
		usecs = get_cpu_iowait_time_us(cpu, NULL);
#endif
	if (usecs == -1ULL)
		return kcs->cpustat[CPUTIME_IOWAIT];
	return sstat_usecs_to_ns(usecs);
}

/*
 * Adds the times of @cpu, in nanoseconds, to @ns.  The sum over all CPUs
 * saturates where /proc/stat's wraps (2^64 ns: 584 CPU-years, a few months
 * of a machine with a thousand CPUs).
 */
static void sstat_cpu_add_ns(int cpu, u64 *ns)
{
	struct kernel_cpustat kcs;
	u64 t[SSTAT_CPU_NR];
	int i;

	kcpustat_cpu_fetch(&kcs, cpu);
	t[SSTAT_CPU_USER] = kcs.cpustat[CPUTIME_USER];
	t[SSTAT_CPU_NICE] = kcs.cpustat[CPUTIME_NICE];
	t[SSTAT_CPU_SYSTEM] = kcs.cpustat[CPUTIME_SYSTEM];
	t[SSTAT_CPU_IDLE] = sstat_idle_ns(&kcs, cpu);
	t[SSTAT_CPU_IOWAIT] = sstat_iowait_ns(&kcs, cpu);
	t[SSTAT_CPU_IRQ] = kcs.cpustat[CPUTIME_IRQ];
	t[SSTAT_CPU_SOFTIRQ] = kcs.cpustat[CPUTIME_SOFTIRQ];
	t[SSTAT_CPU_STEAL] = kcs.cpustat[CPUTIME_STEAL];
	for (i = 0; i < SSTAT_CPU_NR; i++)
		ns[i] = sstat_add_sat(ns[i], t[i]);
}

static void sstat_ns_to_ticks(const u64 *ns, u64 *ticks)
{
	int i;

	for (i = 0; i < SSTAT_CPU_NR; i++)
		ticks[i] = sstat_nsec_to_clock_t(ns[i]);
}

/* The "cpu" line of /proc/stat: summed over possible CPUs, then converted. */
static void sstat_cpu_total(u64 *ticks)
{
	u64 ns[SSTAT_CPU_NR] = { 0 };
	int cpu;

	for_each_possible_cpu(cpu)
		sstat_cpu_add_ns(cpu, ns);
	sstat_ns_to_ticks(ns, ticks);
}

/* The "cpuN" line of /proc/stat. */
static void sstat_cpu_one(int cpu, u64 *ticks)
{
	u64 ns[SSTAT_CPU_NR] = { 0 };

	sstat_cpu_add_ns(cpu, ns);
	sstat_ns_to_ticks(ns, ticks);
}

/* ------------------------------------------------------------------ */
/* Disk                                                                */
/* ------------------------------------------------------------------ */

struct sstat_disk {
	u64 total_kb;
	u64 free_kb;
	u64 available_kb;
	unsigned int used_permille;	/* 1000 * used / (used + available) */
};

/*
 * Every figure of a statfs is the file system's word, and a FUSE server
 * (which any user may mount in a user namespace) chooses its own: up to
 * 2^64 - 1 blocks of up to 4 GiB.  So nothing below multiplies, adds or
 * divides without knowing that the result fits, and no division has a
 * divisor that can be 0 or a quotient that can exceed 64 bits (x86's divq
 * raises #DE, an oops, on either).
 */

/* @blocks of @frsize bytes in kB, rounded down; U64_MAX where that does not fit. */
static u64 sstat_blocks_kb(u64 blocks, u64 frsize)
{
	u64 whole, kb;

	/*
	 * blocks * frsize / 1024 = blocks * (frsize / 1024) +
	 * blocks * (frsize % 1024) / 1024, exactly; the second term is below
	 * blocks, and computed in 96 bits without a division.
	 */
	if (check_mul_overflow(blocks, frsize >> 10, &whole) ||
	    check_add_overflow(whole, mul_u64_u32_shr(blocks, frsize & 1023, 10),
			       &kb))
		return U64_MAX;
	return kb;
}

/*
 * As df(1): of what an ordinary user can fill (the blocks kept for root
 * count as neither), the share in use, in tenths of a percent rounded to
 * the nearest; 0..1000 whatever the figures.
 */
static unsigned int sstat_used_permille(u64 blocks, u64 bfree, u64 bavail)
{
	u64 used, whole;
	int excess;

	/* More free blocks than blocks: nothing is in use. */
	if (bfree >= blocks)
		return 0;
	used = blocks - bfree;
	/* used + bavail in 65 bits: halve both terms where the sum does not fit. */
	if (check_add_overflow(used, bavail, &whole)) {
		used >>= 1;
		whole = used + (bavail >> 1);
	}
	/*
	 * used <= whole, and whole > 0 since used > 0.  Drop low bits of both
	 * until 2000 * whole fits in 64 bits (only past 2^53 blocks, where a
	 * tenth of a percent cannot see them), so that the division is exact
	 * 64-bit arithmetic that cannot trap.
	 */
	excess = fls64(whole) - 53;
	if (excess > 0) {
		used >>= excess;
		whole >>= excess;
	}
	return (div64_u64(used * 2000, whole) + 1) / 2;
}

/* statfs() of the reader's root directory, without a path lookup. */
static int sstat_disk_fetch(struct sstat_disk *disk)
{
	struct kstatfs st;
	struct path root;
	u64 frsize;
	int err;

	get_fs_root(current->fs, &root);
	err = vfs_statfs(&root, &st);
	path_put(&root);
	if (err)
		return err;

	/*
	 * statvfs(3) counts blocks in f_frsize units (f_bsize when unset);
	 * both are longs that a file system may set to anything, taken as
	 * unsigned: a "negative" size saturates like a huge one.
	 */
	frsize = st.f_frsize ? (unsigned long)st.f_frsize :
			       (unsigned long)st.f_bsize;
	disk->total_kb = sstat_blocks_kb(st.f_blocks, frsize);
	disk->free_kb = sstat_blocks_kb(st.f_bfree, frsize);
	disk->available_kb = sstat_blocks_kb(st.f_bavail, frsize);
	disk->used_permille = sstat_used_permille(st.f_blocks, st.f_bfree,
						  st.f_bavail);
	return 0;
}

/* ------------------------------------------------------------------ */
/* /proc/system_stats and /proc/system_stats.json                      */
/* ------------------------------------------------------------------ */

static int sstat_text_show(struct seq_file *m, void *v)
{
	u64 ticks[SSTAT_CPU_NR];
	struct sstat_disk disk;
	struct sstat_mem mem;
	int cpu, i, err;

	err = sstat_disk_fetch(&disk);
	if (err)
		return err;
	sstat_mem_fetch(&mem);

	seq_puts(m, "[memory]\n");
	seq_printf(m, "total_kb %llu\n", mem.total_kb);
	seq_printf(m, "used_kb %llu\n", mem.used_kb);
	seq_printf(m, "free_kb %llu\n", mem.free_kb);
	seq_printf(m, "available_kb %llu\n", mem.available_kb);
	seq_printf(m, "buffers_kb %llu\n", mem.buffers_kb);
	seq_printf(m, "cached_kb %llu\n", mem.cached_kb);

	seq_puts(m, "\n[cpu]\n# name");
	for (i = 0; i < SSTAT_CPU_NR; i++)
		seq_printf(m, " %s", sstat_cpu_names[i]);
	seq_puts(m, " (USER_HZ ticks)\n");

	sstat_cpu_total(ticks);
	seq_puts(m, "cpu");
	for (i = 0; i < SSTAT_CPU_NR; i++)
		seq_printf(m, " %llu", ticks[i]);
	seq_putc(m, '\n');

	for_each_online_cpu(cpu) {
		sstat_cpu_one(cpu, ticks);
		seq_printf(m, "cpu%d", cpu);
		for (i = 0; i < SSTAT_CPU_NR; i++)
			seq_printf(m, " %llu", ticks[i]);
		seq_putc(m, '\n');
	}

	seq_puts(m, "\n[disk /]\n");
	seq_printf(m, "total_kb %llu\n", disk.total_kb);
	seq_printf(m, "free_kb %llu\n", disk.free_kb);
	seq_printf(m, "available_kb %llu\n", disk.available_kb);
	seq_printf(m, "used_pct %u.%u\n", disk.used_permille / 10,
		   disk.used_permille % 10);
	return 0;
}

static void sstat_json_cpu(struct seq_file *m, const u64 *ticks)
{
	int i;

	for (i = 0; i < SSTAT_CPU_NR; i++)
		seq_printf(m, "%s\"%s\": %llu", i ? ", " : "",
			   sstat_cpu_names[i], ticks[i]);
}

static int sstat_json_show(struct seq_file *m, void *v)
{
	u64 ticks[SSTAT_CPU_NR];
	struct sstat_disk disk;
	struct sstat_mem mem;
	bool first = true;
	int cpu, err;

	err = sstat_disk_fetch(&disk);
	if (err)
		return err;
	sstat_mem_fetch(&mem);

	seq_printf(m, "{\"memory\": {\"total_kb\": %llu, \"used_kb\": %llu, ",
		   mem.total_kb, mem.used_kb);
	seq_printf(m, "\"free_kb\": %llu, \"available_kb\": %llu, ",
		   mem.free_kb, mem.available_kb);
	seq_printf(m, "\"buffers_kb\": %llu, \"cached_kb\": %llu}, ",
		   mem.buffers_kb, mem.cached_kb);

	sstat_cpu_total(ticks);
	seq_puts(m, "\"cpu\": {\"total\": {");
	sstat_json_cpu(m, ticks);
	seq_puts(m, "}, \"per_cpu\": [");
	for_each_online_cpu(cpu) {
		sstat_cpu_one(cpu, ticks);
		seq_printf(m, "%s{\"cpu\": %d, ", first ? "" : ", ", cpu);
		sstat_json_cpu(m, ticks);
		seq_putc(m, '}');
		first = false;
	}
	seq_puts(m, "]}, ");

	seq_printf(m, "\"disk\": {\"path\": \"/\", \"total_kb\": %llu, ",
		   disk.total_kb);
	seq_printf(m, "\"free_kb\": %llu, \"available_kb\": %llu, ",
		   disk.free_kb, disk.available_kb);
	seq_printf(m, "\"used_pct\": %u.%u}}\n", disk.used_permille / 10,
		   disk.used_permille % 10);
	return 0;
}

static int sstat_text_open(struct inode *inode, struct file *file)
{
	return single_open(file, sstat_text_show, NULL);
}

static int sstat_json_open(struct inode *inode, struct file *file)
{
	return single_open(file, sstat_json_show, NULL);
}

const struct proc_ops sstat_text_ops = {
	.proc_open	= sstat_text_open,
	.proc_read_iter	= seq_read_iter,
	.proc_lseek	= seq_lseek,
	.proc_release	= single_release,
};

const struct proc_ops sstat_json_ops = {
	.proc_open	= sstat_json_open,
	.proc_read_iter	= seq_read_iter,
	.proc_lseek	= seq_lseek,
	.proc_release	= single_release,
};
