/* Per-instruction execution counts for a guest profile (TCG plugin, API v1). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb; struct qemu_plugin_insn;
typedef struct { const char *target_name; int version_min, version_cur; int system_emulation; union { struct { int smp_vcpus, max_vcpus; } system; }; } qemu_plugin_info_t;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op, void *ptr, uint64_t imm);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
__attribute__((visibility("default"))) int qemu_plugin_version = 1;
struct tbrec { uint64_t count; struct tbrec *next; size_t n; uint64_t va[]; };
static struct tbrec *all;
static const char *out = "/tmp/icount.txt";
static void trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    size_t n = qemu_plugin_tb_n_insns(tb);
    struct tbrec *r = calloc(1, sizeof *r + n * sizeof(uint64_t));
    r->n = n;
    for (size_t i = 0; i < n; i++) r->va[i] = qemu_plugin_insn_vaddr(qemu_plugin_tb_get_insn(tb, i));
    r->next = all; all = r;
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &r->count, 1);
}
static void done(qemu_plugin_id_t id, void *u) {
    FILE *f = fopen(out, "w");
    if (!f) return;
    for (struct tbrec *r = all; r; r = r->next)
        if (r->count) for (size_t i = 0; i < r->n; i++) fprintf(f, "%lx %lu\n", (unsigned long)r->va[i], (unsigned long)r->count);
    fclose(f);
}
__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id, const qemu_plugin_info_t *info, int argc, char **argv) {
    for (int i = 0; i < argc; i++) if (!strncmp(argv[i], "out=", 4)) out = argv[i] + 4;
    qemu_plugin_register_vcpu_tb_trans_cb(id, trans);
    qemu_plugin_register_atexit_cb(id, done, NULL);
    return 0;
}
