/* SPDX-License-Identifier: MIT */
/* Live snapshot internals the tests reach (never installed). */
#ifndef FL_SNAPSHOT_LIVE_INT_H
#define FL_SNAPSHOT_LIVE_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "faultline.h"

/*
 * Tests only: with @hold, the writer thread of the next snapshot waits
 * before saving anything until it is called again without, so that every
 * page a test writes meanwhile is saved by copy before write.
 */
void fl__snapshot_live_hold_writer_for_test(struct fl_snapshot_live *s, bool hold);

/*
 * Tests only: with @fail, the queue of write-protect faults of pager
 * regions cannot grow, as when memory runs out.
 */
void fl__snapshot_live_fail_queue_for_test(struct fl_snapshot_live *s, bool fail);

/*
 * Tests only: how many pages a snapshot found read as holes from a store
 * that hands its pages over (FL_STORE_MOVE), and so waited for the pager
 * to map them.
 */
uint64_t fl__snapshot_live_handover_waits_for_test(struct fl_snapshot_live *s);

#endif /* FL_SNAPSHOT_LIVE_INT_H */
