/* The mountpoint checks: the mount table read as the kernel writes it,
 * and the refusals made before anything is mounted. A dead mount is
 * tested through the real daemon (tests/integration/test_cli.py). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs/mountpoint.h"

static const char table[] =
	"22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
	"40 22 0:35 / /mnt/ai rw,nosuid,nodev shared:20 - fuse.promptfs promptfs "
	"rw,user_id=0,group_id=0,default_permissions\n"
	/* no optional fields before the separator */
	"41 22 0:36 / /mnt/ai2 rw,relatime - tmpfs tmpfs rw\n"
	/* a space and a backslash, escaped by the kernel */
	"42 22 0:37 / /srv/my\\040models\\134x rw - fuse.promptfs promptfs rw\n"
	/* mounted over /mnt/ai2: the last line is on top */
	"43 41 0:38 / /mnt/ai2 rw shared:3 master:1 - fuse.sshfs host: rw\n"
	/* a broken line is skipped */
	"44 22\n";

static int type_at(const char *path, char *type, size_t size)
{
	FILE *f = fmemopen((void *)table, sizeof(table) - 1, "r");
	int rc;

	assert_non_null(f);
	rc = mountinfo_type_at(f, path, type, size);
	fclose(f);
	return rc;
}

static void mount_table_lookups(void **state)
{
	char type[64];

	(void)state;
	assert_int_equal(type_at("/mnt/ai", type, sizeof(type)), 1);
	assert_string_equal(type, "fuse.promptfs");
	assert_int_equal(type_at("/mnt/ai2", type, sizeof(type)), 1);
	assert_string_equal(type, "fuse.sshfs");
	assert_int_equal(type_at("/srv/my models\\x", type, sizeof(type)), 1);
	assert_string_equal(type, "fuse.promptfs");
	assert_int_equal(type_at("/", type, sizeof(type)), 1);
	assert_string_equal(type, "ext4");
	/* a prefix of a mount point is not one */
	assert_int_equal(type_at("/mnt", type, sizeof(type)), 0);
	assert_int_equal(type_at("/srv/my\\040models\\134x", type, sizeof(type)), 0);
}

static void refusals_name_the_reason(void **state)
{
	char dir[] = "/tmp/promptfs-mountpoint-XXXXXX", path[128], err[512];

	(void)state;
	assert_non_null(mkdtemp(dir));
	/* an empty directory is what a mount wants */
	assert_int_equal(mountpoint_prepare(dir, 0, err, sizeof(err)), 0);

	snprintf(path, sizeof(path), "%s/file", dir);
	fclose(fopen(path, "w"));
	assert_int_equal(mountpoint_prepare(dir, 0, err, sizeof(err)), -ENOTEMPTY);
	assert_non_null(strstr(err, "is not empty"));
	assert_non_null(strstr(err, "-o nonempty"));
	assert_int_equal(mountpoint_prepare(dir, 1, err, sizeof(err)), 0);

	assert_int_equal(mountpoint_prepare(path, 0, err, sizeof(err)), -ENOTDIR);
	assert_non_null(strstr(err, "is not a directory"));
	unlink(path);

	snprintf(path, sizeof(path), "%s/missing", dir);
	assert_int_equal(mountpoint_prepare(path, 0, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "No such file or directory"));
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(mount_table_lookups),
		cmocka_unit_test(refusals_name_the_reason),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
