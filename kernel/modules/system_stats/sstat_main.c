// SPDX-License-Identifier: GPL-2.0
/*
 * system_stats - system and per-process memory statistics in /proc
 *
 *   /proc/system_stats       memory, CPU times (all CPUs and each online
 *                            CPU) and the file system of /, as text
 *   /proc/system_stats.json  the same values as one JSON object
 *   /proc/mem_stats_all      every user process as JSON, with totals
 *   /proc/mem_watch          write a PID, read that process as JSON
 *
 * The formats are described in README.md next to this file.
 *
 * Everything is read from kernel state, never from a file: a file path
 * is resolved in the reader's mount namespace, where a bind mount can
 * put anything behind it, this module's own files included.
 *
 * The module is one file per concern, as drivers are laid out:
 * sstat_system.c the system figures and the two files that print them,
 * sstat_procs.c one process's record and /proc/mem_stats_all,
 * sstat_watch.c /proc/mem_watch, and this file, which creates and removes
 * the files.  system_stats.h holds what they share.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/init.h>
#include <linux/kernel.h>
#include <linux/module.h>
#include <linux/printk.h>
#include <linux/proc_fs.h>
#include <linux/types.h>

#include "system_stats.h"

/* ------------------------------------------------------------------ */
/* Module                                                              */
/* ------------------------------------------------------------------ */

static const struct {
	const char *name;
	umode_t mode;
	const struct proc_ops *ops;
} sstat_files[] = {
	{ "system_stats",	0444, &sstat_text_ops },
	{ "system_stats.json",	0444, &sstat_json_ops },
	{ "mem_stats_all",	0444, &sstat_all_ops },
	{ "mem_watch",		0644, &sstat_watch_ops },
};

static void sstat_remove_files(unsigned int n)
{
	while (n--)
		remove_proc_entry(sstat_files[n].name, NULL);
}

static int __init sstat_init(void)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(sstat_files); i++) {
		if (!proc_create(sstat_files[i].name, sstat_files[i].mode, NULL,
				 sstat_files[i].ops)) {
			pr_err("cannot create /proc/%s\n", sstat_files[i].name);
			sstat_remove_files(i);
			return -ENOMEM;
		}
	}
	return 0;
}

/* remove_proc_entry() waits for running reads and releases open files. */
static void __exit sstat_exit(void)
{
	sstat_remove_files(ARRAY_SIZE(sstat_files));
}

module_init(sstat_init);
module_exit(sstat_exit);

MODULE_LICENSE("GPL");
MODULE_AUTHOR("tamalloc project");
MODULE_DESCRIPTION("System and per-process memory statistics in /proc");
