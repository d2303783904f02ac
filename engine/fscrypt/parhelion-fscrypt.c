/*
 * parhelion-fscrypt: the kernel's native file encryption (fscrypt, v2 policies) for parhelion's encrypted
 * volumes, doing exactly the ioctls and nothing else. See Documentation/filesystems/fscrypt.rst in the
 * Linux sources for the interface.
 *
 *   parhelion-fscrypt add-key <mountpoint>                     key (64 bytes) on stdin; prints the identifier
 *   parhelion-fscrypt set-policy <dir> <identifier-hex>        v2, AES-256-XTS / AES-256-CTS, padding 32
 *   parhelion-fscrypt remove-key <mountpoint> <identifier-hex> prints "removed" or "busy"
 *   parhelion-fscrypt status <dir>                             prints key=value lines
 *
 * The key is read from stdin only (never argv or the environment), kept in locked memory and zeroed
 * after use. Exit status: 0 done; 1 the system refused (message on stderr); 2 usage; 3 remove-key: the
 * key is not on the filesystem; 4 set-policy: the directory already has another policy or is not empty.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/fscrypt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define EXIT_SYSTEM 1
#define EXIT_USAGE 2
#define EXIT_NO_KEY 3
#define EXIT_POLICY_CONFLICT 4

#define KEY_SIZE FSCRYPT_MAX_KEY_SIZE /* 64: an AES-256-XTS key is 512 bits; v2 derives per-file keys from it */
#define ID_SIZE FSCRYPT_KEY_IDENTIFIER_SIZE

static const char *prog = "parhelion-fscrypt";

static int usage(const char *why)
{
	fprintf(stderr, "%s: %s\n"
		"usage: %s add-key <mountpoint>                      (the 64-byte key on stdin)\n"
		"       %s set-policy <dir> <identifier-hex>\n"
		"       %s remove-key <mountpoint> <identifier-hex>\n"
		"       %s status <dir>\n", prog, why, prog, prog, prog, prog);
	return EXIT_USAGE;
}

static int fail(const char *what, const char *path)
{
	fprintf(stderr, "%s: %s %s: %s\n", prog, what, path, strerror(errno));
	return EXIT_SYSTEM;
}

/* Opens a directory read-only, without following a final symlink. */
static int open_dir(const char *path)
{
	return open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
}

static void to_hex(const unsigned char *in, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * n] = '\0';
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1; /* lower case only: one spelling per identifier */
}

/* Parses exactly 32 lower-case hex digits into a 16-byte identifier. */
static int parse_identifier(const char *hex, unsigned char out[ID_SIZE])
{
	if (strlen(hex) != 2 * ID_SIZE)
		return -1;
	for (size_t i = 0; i < ID_SIZE; i++) {
		int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return -1;
		out[i] = (unsigned char)(hi << 4 | lo);
	}
	return 0;
}

/* Reads exactly KEY_SIZE bytes from stdin (and then end of input) into buf. */
static int read_key(unsigned char *buf)
{
	size_t got = 0;
	for (;;) {
		unsigned char extra;
		ssize_t n = got < KEY_SIZE ? read(STDIN_FILENO, buf + got, KEY_SIZE - got) : read(STDIN_FILENO, &extra, 1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "%s: reading the key from stdin: %s\n", prog, strerror(errno));
			return EXIT_SYSTEM;
		}
		if (n == 0)
			break;
		if (got == KEY_SIZE) {
			explicit_bzero(&extra, 1);
			fprintf(stderr, "%s: the key on stdin is longer than %d bytes\n", prog, KEY_SIZE);
			return EXIT_USAGE;
		}
		got += (size_t)n;
	}
	if (got != KEY_SIZE) {
		fprintf(stderr, "%s: the key on stdin must be exactly %d bytes (got %zu)\n", prog, KEY_SIZE, got);
		return EXIT_USAGE;
	}
	return 0;
}

static int cmd_add_key(const char *mountpoint)
{
	if (isatty(STDIN_FILENO))
		return usage("add-key reads the key from stdin, which must not be a terminal");
	size_t size = sizeof(struct fscrypt_add_key_arg) + KEY_SIZE;
	struct fscrypt_add_key_arg *arg = calloc(1, size);
	if (arg == NULL)
		return fail("allocating", "the key buffer");
	int locked = mlock(arg, size) == 0; /* keep the key out of swap; best effort without CAP_IPC_LOCK */
	int rc = read_key(arg->raw);
	if (rc == 0) {
		int fd = open_dir(mountpoint);
		if (fd < 0) {
			rc = fail("opening", mountpoint);
		} else {
			arg->key_spec.type = FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER;
			arg->raw_size = KEY_SIZE;
			if (ioctl(fd, FS_IOC_ADD_ENCRYPTION_KEY, arg) != 0) {
				rc = errno == EOPNOTSUPP || errno == ENOTTY
					? (fprintf(stderr, "%s: %s: the filesystem does not support encryption (ext4 needs the 'encrypt' feature)\n", prog, mountpoint), EXIT_SYSTEM)
					: fail("FS_IOC_ADD_ENCRYPTION_KEY on", mountpoint);
			} else {
				char hex[2 * ID_SIZE + 1];
				to_hex(arg->key_spec.u.identifier, ID_SIZE, hex);
				printf("%s\n", hex);
			}
			close(fd);
		}
	}
	explicit_bzero(arg, size);
	if (locked)
		munlock(arg, size);
	free(arg);
	return rc;
}

static int cmd_set_policy(const char *dir, const char *hex)
{
	struct fscrypt_policy_v2 policy;
	memset(&policy, 0, sizeof(policy));
	if (parse_identifier(hex, policy.master_key_identifier) != 0)
		return usage("the identifier must be 32 lower-case hex digits");
	policy.version = FSCRYPT_POLICY_V2;
	policy.contents_encryption_mode = FSCRYPT_MODE_AES_256_XTS;
	policy.filenames_encryption_mode = FSCRYPT_MODE_AES_256_CTS;
	policy.flags = FSCRYPT_POLICY_FLAGS_PAD_32;
	int fd = open_dir(dir);
	if (fd < 0)
		return fail("opening", dir);
	int rc = 0;
	/* The same policy again succeeds (idempotent); another one, or a non-empty directory, is refused. */
	if (ioctl(fd, FS_IOC_SET_ENCRYPTION_POLICY, &policy) != 0) {
		if (errno == EEXIST || errno == ENOTEMPTY) {
			fprintf(stderr, "%s: %s: %s\n", prog, dir, errno == EEXIST ? "the directory already has another encryption policy" : "the directory is not empty");
			rc = EXIT_POLICY_CONFLICT;
		} else if (errno == ENOKEY) {
			fprintf(stderr, "%s: %s: the key %s has not been added to this filesystem\n", prog, dir, hex);
			rc = EXIT_SYSTEM;
		} else {
			rc = fail("FS_IOC_SET_ENCRYPTION_POLICY on", dir);
		}
	}
	close(fd);
	return rc;
}

static int cmd_remove_key(const char *mountpoint, const char *hex)
{
	struct fscrypt_remove_key_arg arg;
	memset(&arg, 0, sizeof(arg));
	if (parse_identifier(hex, arg.key_spec.u.identifier) != 0)
		return usage("the identifier must be 32 lower-case hex digits");
	arg.key_spec.type = FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER;
	int fd = open_dir(mountpoint);
	if (fd < 0)
		return fail("opening", mountpoint);
	/* Every user's claim, not only root's: the key must leave the kernel whoever added it. */
	int rc = 0;
	if (ioctl(fd, FS_IOC_REMOVE_ENCRYPTION_KEY_ALL_USERS, &arg) != 0) {
		if (errno == ENOKEY) {
			fprintf(stderr, "%s: %s: the key %s is not on this filesystem\n", prog, mountpoint, hex);
			rc = EXIT_NO_KEY;
		} else {
			rc = fail("FS_IOC_REMOVE_ENCRYPTION_KEY_ALL_USERS on", mountpoint);
		}
	} else {
		/* Busy: the secret is gone, but files still open stay readable until closed; calling again retries. */
		printf("%s\n", (arg.removal_status_flags & FSCRYPT_KEY_REMOVAL_STATUS_FLAG_FILES_BUSY) ? "busy" : "removed");
	}
	close(fd);
	return rc;
}

static const char *mode_name(unsigned m)
{
	switch (m) {
	case FSCRYPT_MODE_AES_256_XTS: return "aes-256-xts";
	case FSCRYPT_MODE_AES_256_CTS: return "aes-256-cts";
	case FSCRYPT_MODE_AES_128_CBC: return "aes-128-cbc";
	case FSCRYPT_MODE_AES_128_CTS: return "aes-128-cts";
	case FSCRYPT_MODE_ADIANTUM: return "adiantum";
	default: return "other";
	}
}

static int cmd_status(const char *dir)
{
	int fd = open_dir(dir);
	if (fd < 0)
		return fail("opening", dir);
	struct fscrypt_get_policy_ex_arg ex;
	memset(&ex, 0, sizeof(ex));
	ex.policy_size = sizeof(ex.policy);
	int rc = 0;
	if (ioctl(fd, FS_IOC_GET_ENCRYPTION_POLICY_EX, &ex) != 0) {
		if (errno == ENODATA) {
			printf("policy=none\n");
		} else if (errno == EOPNOTSUPP || errno == ENOTTY) {
			printf("policy=unsupported\n");
		} else {
			rc = fail("FS_IOC_GET_ENCRYPTION_POLICY_EX on", dir);
		}
	} else if (ex.policy.version != FSCRYPT_POLICY_V2) {
		printf("policy=v1\n");
	} else {
		const struct fscrypt_policy_v2 *p = &ex.policy.v2;
		char hex[2 * ID_SIZE + 1];
		to_hex(p->master_key_identifier, ID_SIZE, hex);
		printf("policy=v2\ncontents=%s\nfilenames=%s\npadding=%d\nidentifier=%s\n", mode_name(p->contents_encryption_mode),
		       mode_name(p->filenames_encryption_mode), 4 << (p->flags & FSCRYPT_POLICY_FLAGS_PAD_MASK), hex);
		struct fscrypt_get_key_status_arg ks;
		memset(&ks, 0, sizeof(ks));
		ks.key_spec.type = FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER;
		memcpy(ks.key_spec.u.identifier, p->master_key_identifier, ID_SIZE);
		if (ioctl(fd, FS_IOC_GET_ENCRYPTION_KEY_STATUS, &ks) != 0) {
			rc = fail("FS_IOC_GET_ENCRYPTION_KEY_STATUS on", dir);
		} else {
			const char *s = ks.status == FSCRYPT_KEY_STATUS_PRESENT ? "present"
				: ks.status == FSCRYPT_KEY_STATUS_ABSENT ? "absent"
				: ks.status == FSCRYPT_KEY_STATUS_INCOMPLETELY_REMOVED ? "incompletely-removed" : "unknown";
			printf("key=%s\nusers=%u\n", s, ks.user_count);
		}
	}
	close(fd);
	return rc;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return usage("no subcommand");
	const char *cmd = argv[1];
	int rc;
	if (strcmp(cmd, "add-key") == 0) {
		if (argc != 3)
			return usage("add-key takes one argument: <mountpoint>");
		rc = cmd_add_key(argv[2]);
	} else if (strcmp(cmd, "set-policy") == 0) {
		if (argc != 4)
			return usage("set-policy takes two arguments: <dir> <identifier-hex>");
		rc = cmd_set_policy(argv[2], argv[3]);
	} else if (strcmp(cmd, "remove-key") == 0) {
		if (argc != 4)
			return usage("remove-key takes two arguments: <mountpoint> <identifier-hex>");
		rc = cmd_remove_key(argv[2], argv[3]);
	} else if (strcmp(cmd, "status") == 0) {
		if (argc != 3)
			return usage("status takes one argument: <dir>");
		rc = cmd_status(argv[2]);
	} else {
		return usage("unknown subcommand");
	}
	if (fflush(stdout) != 0 && rc == 0) {
		fprintf(stderr, "%s: writing the result: %s\n", prog, strerror(errno));
		rc = EXIT_SYSTEM;
	}
	return rc;
}
