/* SPDX-License-Identifier: MIT */
/* Every test, in one table: X(name, FL_FEAT_* needed, T_* flags, timeout in seconds; 0 = 10). */
#ifndef FL_TEST_TESTS_H
#define FL_TEST_TESTS_H

#include "harness.h"

#define T_ALL_TESTS(X)                                                             \
	/* test-budget.c: memory budgets and eviction */                          \
	X(budget_create_options, 0, 0, 0)                                          \
	X(budget_region_options, 0, T_UFFD, 0)                                     \
	X(budget_fifo_clean_threads, FL_FEAT_MOVE, T_UFFD, 60)                     \
	X(budget_fifo_clean_threads_shmem, FL_FEAT_MISSING_SHMEM, T_UFFD, 60)      \
	X(budget_fifo_clean_sigbus, FL_FEAT_SIGBUS, T_UFFD, 60)                    \
	X(budget_fifo_clean_loop, 0, T_UFFD, 60)                                   \
	X(budget_shared_two_pagers, FL_FEAT_MOVE, T_UFFD, 60)                      \
	X(budget_bound_under_load, 0, T_UFFD, 60)                                  \
	X(budget_writable_store_written_back, FL_FEAT_SIGBUS, T_UFFD, 0)           \
	X(budget_2q_keeps_hot_set, FL_FEAT_SIGBUS, T_UFFD, 60)                     \
	X(budget_volatile_store, FL_FEAT_MOVE, T_UFFD, 0)                          \
	X(budget_volatile_zero, FL_FEAT_MOVE, T_UFFD, 0)                           \
	X(budget_volatile_sigbus, FL_FEAT_MOVE | FL_FEAT_POISON, T_UFFD, 0)        \
	X(budget_batch_over_4mib, FL_FEAT_SIGBUS | FL_FEAT_MOVE | FL_FEAT_POISON, T_UFFD, 60) \
	X(budget_shmem_discard_races_eviction,                                     \
	  FL_FEAT_MISSING_SHMEM | FL_FEAT_WP_HUGETLBFS_SHMEM | FL_FEAT_EVENT_REMOVE, \
	  T_UFFD, 60)                                                              \
	X(budget_volatile_sigbus_discard_races_eviction,                           \
	  FL_FEAT_MOVE | FL_FEAT_POISON | FL_FEAT_PAGEFAULT_FLAG_WP |              \
	  FL_FEAT_EVENT_REMOVE, T_UFFD, 60)                                        \
	X(budget_keep_on_remove_brings_evicted_back, FL_FEAT_SIGBUS, T_UFFD, 60)    \
	X(budget_keep_on_remove_threads, FL_FEAT_MOVE, T_UFFD, 60)                \
	X(budget_keep_on_remove_at_destroy, FL_FEAT_MOVE | FL_FEAT_EVENT_REMOVE, T_UFFD, 60) \
	X(budget_advise_dontneed_first, FL_FEAT_SIGBUS, T_UFFD, 0)                 \
	X(budget_live_snapshot_pauses_eviction,                                    \
	  FL_FEAT_MOVE | FL_FEAT_PAGEFAULT_FLAG_WP, T_UFFD | T_KFAULTS, 60)         \
	/* test-basics.c: pure user-space, run everywhere */                       \
	X(version_and_names, 0, 0, 0)                                              \
	X(probe_cached_and_consistent, 0, 0, 0)                                    \
	X(ioctl_bits_unknown_accepted, 0, 0, 0)                                    \
	X(feature_bits_roundtrip, 0, 0, 0)                                         \
	X(open_rejects_bad_options, 0, 0, 0)                                       \
	/* test-open.c */                                                          \
	X(open_each_path, 0, T_UFFD, 0)                                            \
	X(open_path_env_override, 0, T_UFFD, 0)                                    \
	X(open_missing_feature, 0, T_UFFD, 0)                                      \
	X(open_log_names_remedy, 0, T_UFFD, 0)                                     \
	X(open_fork_denied_is_eperm, 0, T_UFFD, 0)                                 \
	X(adopt_and_take, 0, T_UFFD, 0)                                            \
	X(register_modes_and_ioctls, 0, T_UFFD, 0)                                 \
	/* test-log.c */                                                           \
	X(log_einval_says_why, 0, 0, 0)                                            \
	X(log_einval_region_add, 0, T_UFFD, 0)                                     \
	X(log_env_prints_to_stderr, 0, 0, 0)                                       \
	/* test-runner.c: the runner (the fixtures only run when named) */         \
	X(runner_unmatched_pattern_fails, 0, 0, 0)                                 \
	X(runner_fail_line_has_reason, 0, 0, 0)                                    \
	X(runner_timeout_scaled, 0, 0, 0)                                          \
	X(runner_child_exit_keeps_hugepages, 0, T_HUGETLB, 0)                      \
	X(runner_fixture_fails, 0, T_FIXTURE, 0)                                   \
	X(runner_fixture_hangs, 0, T_FIXTURE, 1)                                   \
	X(runner_fixture_skips, 0, T_FIXTURE, 0)                                   \
	/* test-tools.c: the faultline command */                                  \
	X(tool_usage_errors, 0, 0, 0)                                              \
	X(tool_help_and_version, 0, 0, 0)                                          \
	X(tool_bench_help_each, 0, 0, 0)                                           \
	X(tool_bench_latency_floors, FL_FEAT_SIGBUS, T_UFFD, 60)                   \
	X(tool_bench_snapshot_tiny, 0, T_UFFD | T_KFAULTS, 120)                    \
	X(tool_bench_migrate_tiny, 0, T_UFFD, 120)                                 \
	X(tool_bench_outofcore_tiny, FL_FEAT_MOVE, T_UFFD, 120)                    \
	X(example_outofcore_histogram, FL_FEAT_MOVE, T_UFFD, 60)                   \
	X(tool_probe_table_and_json, 0, 0, 0)                                      \
	X(json_validator_rejects_garbage, 0, 0, 0)                                 \
	/* test-resolve.c, test-events.c, test-wp.c: the uffd layer */             \
	X(resolve_copy_zeropage_anon, 0, T_UFFD, 0)                                \
	X(resolve_copy_zeropage_shmem, FL_FEAT_MISSING_SHMEM, T_UFFD, 0)           \
	X(resolve_copy_zeropage_hugetlb, FL_FEAT_MISSING_HUGETLBFS,                \
	  T_UFFD | T_HUGETLB, 0)                                                   \
	X(resolve_fault_tid_exact_address,                                         \
	  FL_FEAT_THREAD_ID | FL_FEAT_EXACT_ADDRESS, T_UFFD, 0)                    \
	X(resolve_unregister_and_close_wake, 0, T_UFFD, 0)                         \
	X(resolve_copy_partial_eexist, 0, T_UFFD, 0)                               \
	X(resolve_zeropage_partial_eexist, 0, T_UFFD, 0)                           \
	X(resolve_dontwake_then_wake, 0, T_UFFD, 0)                                \
	X(resolve_flags_einval, FL_FEAT_PAGEFAULT_FLAG_WP, T_UFFD, 0)              \
	X(resolve_minor_continue_shmem, FL_FEAT_MINOR_SHMEM, T_UFFD, 0)            \
	X(resolve_minor_continue_hugetlb, FL_FEAT_MINOR_HUGETLBFS,                 \
	  T_UFFD | T_HUGETLB, 0)                                                   \
	X(resolve_move_pages, FL_FEAT_MOVE, T_UFFD, 0)                             \
	X(resolve_move_thp, FL_FEAT_MOVE, T_UFFD, 30)                              \
	X(resolve_poison_sigbus, FL_FEAT_POISON, T_UFFD, 0)                        \
	X(resolve_poison_absent_runs, FL_FEAT_POISON, T_UFFD, 0)                   \
	X(resolve_sigbus_feature, FL_FEAT_SIGBUS, T_UFFD, 0)                       \
	X(resolve_esrch_after_exit, 0, T_UFFD, 0)                                  \
	X(event_fork, FL_FEAT_EVENT_FORK, T_UFFD | T_ROOT, 0)                      \
	X(event_remap, FL_FEAT_EVENT_REMAP, T_UFFD, 0)                             \
	X(event_remove, FL_FEAT_EVENT_REMOVE, T_UFFD, 0)                           \
	X(event_unmap, FL_FEAT_EVENT_UNMAP, T_UFFD, 0)                             \
	X(event_pending_eagain, FL_FEAT_EVENT_REMOVE, T_UFFD, 0)                   \
	X(event_poison_absent_drains, FL_FEAT_EVENT_REMOVE | FL_FEAT_POISON,       \
	  T_UFFD, 0)                                                               \
	X(wp_fault_anon, FL_FEAT_PAGEFAULT_FLAG_WP, T_UFFD, 0)                     \
	X(wp_fault_shmem, FL_FEAT_MISSING_SHMEM | FL_FEAT_WP_HUGETLBFS_SHMEM,      \
	  T_UFFD, 0)                                                               \
	X(wp_fault_hugetlb, FL_FEAT_MISSING_HUGETLBFS |                            \
	  FL_FEAT_WP_HUGETLBFS_SHMEM, T_UFFD | T_HUGETLB, 0)                       \
	X(wp_copy_anon, FL_FEAT_PAGEFAULT_FLAG_WP, T_UFFD, 0)                      \
	X(wp_copy_shmem, FL_FEAT_MISSING_SHMEM | FL_FEAT_WP_HUGETLBFS_SHMEM,       \
	  T_UFFD, 0)                                                               \
	X(wp_continue_shmem, FL_FEAT_MINOR_SHMEM | FL_FEAT_WP_HUGETLBFS_SHMEM,     \
	  T_UFFD, 0)                                                               \
	X(wp_async_pagemap_scan, FL_FEAT_WP_ASYNC | FL_FEAT_PAGEMAP_SCAN,          \
	  T_UFFD, 0)                                                               \
	X(wp_async_scan_many_runs, FL_FEAT_WP_ASYNC | FL_FEAT_PAGEMAP_SCAN,        \
	  T_UFFD, 0)                                                               \
	/* test-store.c: pure user-space, run everywhere */                        \
	X(store_create_checks, 0, 0, 0)                                            \
	X(store_custom_read_error, 0, 0, 0)                                        \
	X(store_bounds, 0, 0, 0)                                                   \
	X(store_pattern_functions, 0, 0, 0)                                        \
	X(store_pattern_store, 0, 0, 0)                                            \
	X(store_zero_all_holes, 0, 0, 0)                                           \
	X(store_mem_read_write, 0, 0, 0)                                           \
	X(store_mem_take_pages, 0, 0, 0)                                           \
	X(store_mem_take_race, 0, 0, 0)                                            \
	X(store_mem_no_move, 0, 0, 0)                                              \
	X(store_file_offset, 0, 0, 0)                                              \
	X(store_file_holes, 0, 0, 0)                                               \
	X(store_file_direct, 0, 0, 0)                                              \
	X(store_file_truncated_eio, 0, 0, 0)                                       \
	X(store_file_hole_punched_after_open, 0, 0, 0)                             \
	X(store_file_write_readback, 0, 0, 0)                                      \
	X(store_file_opts, 0, 0, 0)                                                \
	X(store_concurrent_reads, 0, 0, 30)                                        \
	/* test-redis.c: the Redis store against real servers (FL_REQUIRE_REDIS) */ \
	X(redis_open_rejects_bad_arguments, 0, 0, 0)                               \
	X(redis_unreachable_fails_bounded, 0, 0, 60)                               \
	X(redis_pages_through_pager_keys, 0, T_UFFD, 60)                           \
	X(redis_pages_through_pager_hash, 0, T_UFFD, 60)                           \
	X(redis_deleted_key_sigbus_keys, 0, T_UFFD, 60)                            \
	X(redis_deleted_key_sigbus_hash, 0, T_UFFD, 60)                            \
	X(redis_server_gone_eio, 0, 0, 60)                                         \
	X(redis_cluster_routing_moved_ask, 0, T_UFFD, 300)                         \
	X(redis_cluster_failover, 0, T_UFFD | T_STRESS, 600)                       \
	X(redis_cluster_far_memory, FL_FEAT_MOVE | FL_FEAT_PAGEFAULT_FLAG_WP, T_UFFD, 300) \
	X(tool_bench_remote_tiny, 0, T_UFFD, 300)                                  \
	X(tool_serve_demo, 0, T_UFFD, 300)                                         \
	/* test-redis-tls.c: the Redis store over TLS (rediss://), real servers */  \
	X(redis_tls_pages, 0, T_UFFD, 120)                                         \
	X(redis_tls_wrong_ca_or_name_refused, 0, 0, 120)                           \
	X(redis_tls_cluster, 0, T_UFFD, 300)                                       \
	/* test-bench.c: the statistics of faultline bench, pure user-space */     \
	X(bench_percentiles_and_median, 0, 0, 0)                                   \
	X(bench_log_histogram, 0, 0, 0)                                            \
	/* test-wire.c: the wire protocol, pure user-space */                      \
	X(wire_crc32c_vectors, 0, 0, 60)                                           \
	X(wire_roundtrip_every_type, 0, 0, 0)                                      \
	X(wire_header_extension_skipped, 0, 0, 0)                                  \
	X(wire_malformed_header, 0, 0, 0)                                          \
	X(wire_malformed_payload, 0, 0, 0)                                         \
	X(wire_truncated_and_trailing, 0, 0, 0)                                    \
	X(wire_page_checksum_names_page, 0, 0, 0)                                  \
	X(wire_incremental_equals_at_once, 0, 0, 60)                               \
	X(wire_encoder_refuses_what_decoders_would, 0, 0, 0)                       \
	X(wire_handshake_negotiate, 0, 0, 0)                                            \
	X(wire_socketpair_64mib_stream, 0, 0, 120)                                 \
	X(wire_tcp_loopback, 0, 0, 0)                                              \
	X(wire_tcp_stream, 0, 0, 60)                                               \
	X(wire_fuzz_seeds, 0, 0, 0)                                                \
	/* test-transport.c: TLS 1.3 and plain TCP connections, pure user-space */  \
	X(transport_psk_stream, 0, 0, 60)                                          \
	X(transport_psk_wrong_key_refused, 0, 0, 0)                                \
	X(transport_x509, 0, 0, 60)                                                \
	X(transport_handshake_stall, 0, 0, 0)                                      \
	X(transport_plain_explicit, 0, 0, 0)                                       \
	X(transport_mitm_flip_detected, 0, 0, 60)                                  \
	/* test-snapshot.c: snapshot files, the snapshot store */                  \
	X(snapshot_writer_concurrent_puts, 0, 0, 30)                               \
	X(snapshot_writer_zstd, 0, 0, 30)                                          \
	X(snapshot_writer_errors, 0, 0, 0)                                         \
	X(snapshot_read_back, 0, 0, 30)                                            \
	X(snapshot_refuses_bad_files, 0, 0, 0)                                     \
	X(snapshot_restore_pager, 0, T_UFFD, 60)                                   \
	X(snapshot_corrupt_page_sigbus, 0, T_UFFD, 60)                             \
	X(snapshot_chain_restore, 0, T_UFFD, 60)                                   \
	X(snapshot_restore_direct, 0, T_UFFD, 60)                                  \
	X(snapshot_concurrent_reads, 0, 0, 60)                                     \
	X(snapshot_restore_hugetlb, FL_FEAT_MISSING_HUGETLBFS,                     \
	  T_UFFD | T_HUGETLB, 60)                                                  \
	/* test-snapshot-tool.c: faultline snapshot */                             \
	X(snapshot_tool_usage, 0, 0, 0)                                            \
	X(snapshot_tool_convert_verify, 0, 0, 30)                                  \
	X(snapshot_tool_merge, 0, 0, 30)                                           \
	X(snapshot_tool_demo, FL_FEAT_PAGEFAULT_FLAG_WP, T_UFFD | T_KFAULTS, 60)   \
	/* test-snapshot-live.c: live and incremental snapshots */                \
	X(snapshot_live_anon_instant, FL_FEAT_PAGEFAULT_FLAG_WP, T_UFFD | T_KFAULTS, 60)       \
	X(snapshot_live_anon_unpopulated_fallback, FL_FEAT_PAGEFAULT_FLAG_WP,      \
	  T_UFFD | T_KFAULTS, 60)                                                  \
	X(snapshot_live_memfd_instant, FL_FEAT_WP_HUGETLBFS_SHMEM, T_UFFD | T_KFAULTS, 60)     \
	X(snapshot_live_hugetlb_instant, FL_FEAT_WP_HUGETLBFS_SHMEM,               \
	  T_UFFD | T_KFAULTS | T_HUGETLB, 60)                                      \
	X(snapshot_live_copy_before_write, FL_FEAT_PAGEFAULT_FLAG_WP, T_UFFD | T_KFAULTS, 30)  \
	X(snapshot_live_copy_before_write_track, FL_FEAT_PAGEFAULT_FLAG_WP, T_UFFD | T_KFAULTS, 30) \
	X(snapshot_live_pager_region, FL_FEAT_PAGEFAULT_FLAG_WP, T_UFFD | T_KFAULTS, 60)       \
	X(snapshot_live_pager_region_auto, FL_FEAT_PAGEFAULT_FLAG_WP, T_UFFD | T_KFAULTS, 60)  \
	X(snapshot_live_pager_incremental, FL_FEAT_PAGEFAULT_FLAG_WP, T_UFFD | T_KFAULTS, 60)  \
	X(snapshot_live_pager_incremental_auto, FL_FEAT_PAGEFAULT_FLAG_WP, T_UFFD | T_KFAULTS, 60) \
	X(snapshot_live_pager_incremental_memfd,                                   \
	  FL_FEAT_WP_HUGETLBFS_SHMEM | FL_FEAT_MINOR_SHMEM, T_UFFD | T_KFAULTS, 60)            \
	X(snapshot_live_discard_unmap, FL_FEAT_PAGEFAULT_FLAG_WP, T_UFFD | T_KFAULTS, 60)      \
	X(snapshot_live_mremap, FL_FEAT_PAGEFAULT_FLAG_WP | FL_FEAT_EVENT_REMAP,   \
	  T_UFFD | T_KFAULTS, 30)                                                  \
	X(snapshot_live_write_races_mremap,                                        \
	  FL_FEAT_PAGEFAULT_FLAG_WP | FL_FEAT_EVENT_REMAP, T_UFFD | T_KFAULTS, 30) \
	X(snapshot_live_incremental, FL_FEAT_PAGEFAULT_FLAG_WP, T_UFFD | T_KFAULTS, 60)        \
	X(snapshot_live_incremental_unpopulated_fallback,                          \
	  FL_FEAT_PAGEFAULT_FLAG_WP, T_UFFD | T_KFAULTS, 60)                                   \
	X(snapshot_live_errors, FL_FEAT_PAGEFAULT_FLAG_WP, T_UFFD | T_KFAULTS, 0)              \
	X(snapshot_live_writer_fails, FL_FEAT_PAGEFAULT_FLAG_WP, T_UFFD | T_KFAULTS, 60)       \
	X(snapshot_live_pager_file_store, FL_FEAT_PAGEFAULT_FLAG_WP, T_UFFD | T_KFAULTS, 30)   \
	X(snapshot_live_pager_mem_store_move, FL_FEAT_PAGEFAULT_FLAG_WP | FL_FEAT_MOVE,     \
	  T_UFFD | T_KFAULTS, 30)                                                  \
	X(snapshot_live_pager_queue_oom, FL_FEAT_PAGEFAULT_FLAG_WP, T_UFFD | T_KFAULTS, 60)    \
	X(snapshot_live_pager_handover_at_instant,                                 \
	  FL_FEAT_PAGEFAULT_FLAG_WP | FL_FEAT_MOVE, T_UFFD | T_KFAULTS, 30)        \
	X(snapshot_live_memfd_dontneed, FL_FEAT_WP_HUGETLBFS_SHMEM, T_UFFD | T_KFAULTS, 30)    \
	X(snapshot_live_pager_poisoned, FL_FEAT_POISON, T_UFFD | T_KFAULTS, 30)              \
	X(snapshot_live_unprotect_event_pending, FL_FEAT_EVENT_REMOVE, T_UFFD | T_KFAULTS, 60) \
	X(snapshot_live_take_while_discarding, FL_FEAT_EVENT_REMOVE, T_UFFD | T_KFAULTS, 120) \
	X(snapshot_live_take_refused_then_retried, FL_FEAT_EVENT_REMOVE, T_UFFD | T_KFAULTS, 60) \
	/* test-pager.c, test-pager-life.c: the pager engine */                    \
	X(pager_create_options, 0, T_UFFD, 0)                                      \
	X(pager_threads_named_and_counted, 0, T_UFFD, 0)                           \
	X(region_add_options, 0, T_UFFD, 0)                                        \
	X(pager_contents_threads, 0, T_UFFD, 30)                                   \
	X(pager_contents_sigbus, FL_FEAT_SIGBUS, T_UFFD, 30)                       \
	X(pager_contents_loop, 0, T_UFFD, 30)                                      \
	X(pager_contents_hugetlb, FL_FEAT_MISSING_HUGETLBFS,                       \
	  T_UFFD | T_HUGETLB, 60)                                                  \
	X(pager_move_falls_back_to_copy, 0, T_UFFD, 0)                             \
	X(pager_same_page_many_threads, 0, T_UFFD, 0)                              \
	X(pager_distinct_pages_many_threads, 0, T_UFFD, 0)                         \
	X(pager_prefetch_fixed_edges, 0, T_UFFD, 0)                                \
	X(pager_prefetch_adaptive, 0, T_UFFD, 0)                                   \
	X(pager_populate_then_syscall, FL_FEAT_SIGBUS, T_UFFD, 0)                  \
	X(pager_populate_concurrent_with_faults, 0, T_UFFD, 0)                     \
	X(pager_file_store_offset, 0, T_UFFD, 0)                                   \
	X(pager_stats_histogram, 0, T_UFFD, 0)                                     \
	X(pager_stats_sized, 0, T_UFFD, 0)                                         \
	X(pager_echild_after_fork, 0, T_UFFD, 0)                                   \
	X(pager_store_error_poison, 0, T_UFFD, 0)                                  \
	X(pager_store_bad_return_poison, 0, T_UFFD, 0)                             \
	X(pager_store_error_block, 0, T_UFFD, 0)                                   \
	X(pager_slow_page_does_not_block_others, 0, T_UFFD, 0)                     \
	X(pager_batch_handoff, 0, T_UFFD, 0)                                       \
	X(pager_all_readers_slow, 0, T_UFFD, 0)                                    \
	X(pager_serves_other_process, 0, T_UFFD, 0)                                \
	X(pager_stop_leaves_faults_blocked, 0, T_UFFD, 0)                          \
	X(pager_destroy_releases_blocked_with_sigbus, 0, T_UFFD, 0)                \
	X(pager_loop_mode_epoll, 0, T_UFFD, 0)                                     \
	X(pager_install_waits_for_events, FL_FEAT_EVENT_REMOVE, T_UFFD, 0)         \
	X(pager_events_remove_remap_unmap, FL_FEAT_EVENT_REMOVE |                  \
	  FL_FEAT_EVENT_REMAP | FL_FEAT_EVENT_UNMAP, T_UFFD, 0)                    \
	X(pager_remove_races_store_read, FL_FEAT_EVENT_REMOVE, T_UFFD, 0)          \
	X(pager_remove_races_store_read_other_process, FL_FEAT_EVENT_REMOVE,       \
	  T_UFFD, 0)                                                               \
	X(pager_fork_child_never_reads_zeros, FL_FEAT_EVENT_FORK,           \
	  T_UFFD | T_ROOT, 0)                                                      \
	X(pager_fork_repeated_no_on_event, FL_FEAT_EVENT_FORK,              \
	  T_UFFD | T_ROOT, 0)                                                      \
	X(pager_partial_mremap_fails_loudly, FL_FEAT_EVENT_REMAP,           \
	  T_UFFD, 0)                                                               \
	X(pager_supply_races_mremap, FL_FEAT_EVENT_REMAP, T_UFFD, 0)            \
	X(pager_fault_races_mremap, FL_FEAT_EVENT_REMAP, T_UFFD, 0)             \
	X(pager_supply_split_mapping, FL_FEAT_EVENT_REMAP, T_UFFD, 0)           \
	X(pager_fault_split_mapping, 0, T_UFFD, 0)                               \
	X(pager_given_up_fault_in_flight_fails_loudly, 0, T_UFFD, 0)             \
	X(pager_supply_only_absent, FL_FEAT_EVENT_REMOVE, T_UFFD, 0)               \
	/* test-monitor-proto.c: the monitor wire format, pure user-space */       \
	X(monitor_proto_hello_roundtrip, 0, 0, 0)                                  \
	X(monitor_proto_reply_event_roundtrip, 0, 0, 0)                            \
	X(monitor_proto_header_errors, 0, 0, 0)                                    \
	X(monitor_proto_region_errors, 0, 0, 0)                                    \
	X(monitor_proto_layout_events, 0, 0, 0)                                    \
	X(monitor_proto_firecracker_valid, 0, 0, 0)                                \
	X(monitor_proto_firecracker_invalid, 0, 0, 0)                              \
	X(monitor_proto_recv_hello, 0, 0, 0)                                       \
	X(monitor_proto_claim_grant, 0, 0, 0)                                      \
	/* test-monitor-client.c: the client against fake monitors */              \
	X(monitor_attach_serves_faults, FL_FEAT_EVENT_FORK | FL_FEAT_EVENT_REMAP | \
	  FL_FEAT_EVENT_REMOVE | FL_FEAT_EVENT_UNMAP, T_UFFD, 0)                   \
	X(monitor_attach_errors, FL_FEAT_EVENT_REMAP | FL_FEAT_EVENT_REMOVE |      \
	  FL_FEAT_EVENT_UNMAP, T_UFFD, 0)                                          \
	X(monitor_fail_loud_sigbus, FL_FEAT_EVENT_REMAP | FL_FEAT_EVENT_REMOVE |   \
	  FL_FEAT_EVENT_UNMAP, T_UFFD, 0)                                          \
	X(monitor_fork_orphan_fails_loud, FL_FEAT_EVENT_FORK | FL_FEAT_EVENT_REMAP | \
	  FL_FEAT_EVENT_REMOVE | FL_FEAT_EVENT_UNMAP, T_UFFD, 30)                  \
	X(monitor_reattach_auto, FL_FEAT_EVENT_REMAP | FL_FEAT_EVENT_REMOVE |      \
	  FL_FEAT_EVENT_UNMAP, T_UFFD, 0)                                          \
	X(monitor_reattach_explicit, FL_FEAT_EVENT_REMAP | FL_FEAT_EVENT_REMOVE |  \
	  FL_FEAT_EVENT_UNMAP, T_UFFD, 0)                                          \
	X(monitor_peer_and_fd_checks, 0, T_UFFD | T_ROOT, 0)                       \
	X(monitor_wait_max_fails_loud, FL_FEAT_EVENT_REMAP | FL_FEAT_EVENT_REMOVE |\
	  FL_FEAT_EVENT_UNMAP, T_UFFD, 0)                                          \
	X(monitor_layout_lost_fails_loud, FL_FEAT_EVENT_REMAP |                    \
	  FL_FEAT_EVENT_REMOVE | FL_FEAT_EVENT_UNMAP, T_UFFD, 0)                   \
	/* test-migrate.c: post-copy migration */                                  \
	X(migrate_in_process, 0, T_UFFD, 30)                                       \
	X(migrate_urgent_while_rate_limited, 0, T_UFFD, 30)                        \
	X(migrate_requests_deduplicated, 0, T_UFFD, 30)                            \
	X(migrate_dest_writes_survive, 0, T_UFFD, 30)                              \
	X(migrate_postcopy_fork_child, FL_FEAT_EVENT_FORK, T_UFFD | T_ROOT, 30)     \
	X(migrate_postcopy_fork_repeated, FL_FEAT_EVENT_FORK, T_UFFD | T_ROOT, 30) \
	X(migrate_postcopy_fork_without_event, 0, T_UFFD, 30)                      \
	X(migrate_postcopy_mremap, 0, T_UFFD, 30)                                  \
	X(migrate_postcopy_discard, 0, T_UFFD, 30)                                 \
	X(migrate_range_taken, 0, T_UFFD, 0)                                       \
	X(migrate_wrong_key, 0, T_UFFD, 30)                                        \
	X(migrate_version_mismatch, 0, T_UFFD, 30)                                 \
	X(migrate_short_key, 0, T_UFFD, 0)                                         \
	X(migrate_plain_needs_insecure, 0, T_UFFD, 0)                         \
	X(migrate_survives_strangers, 0, T_UFFD, 30)                               \
	X(migrate_stalled_hello_delays_nobody, 0, T_UFFD, 120)                     \
	X(migrate_precopy_needs_dirty_tracking, 0, T_UFFD, 0)                    \
	X(migrate_precopy_hybrid, FL_FEAT_WP_ASYNC | FL_FEAT_PAGEMAP_SCAN,         \
	  T_UFFD, 60)                                                              \
	X(migrate_precopy_stop_and_copy, FL_FEAT_WP_ASYNC | FL_FEAT_PAGEMAP_SCAN,  \
	  T_UFFD, 60)                                                              \
	X(migrate_two_processes, 0, T_UFFD, 60)                                    \
	X(migrate_five_breaks, FL_FEAT_WP_ASYNC | FL_FEAT_PAGEMAP_SCAN,            \
	  T_UFFD, 120)                                                             \
	X(migrate_stranger_at_resume, 0, T_UFFD, 30)                               \
	X(migrate_tls_mitm_flip, 0, T_UFFD, 30)                                    \
	X(migrate_tls_x509, 0, T_UFFD, 30)                                         \
	X(migrate_tls_peer_stalls, 0, T_UFFD, 30)                                  \
	X(migrate_source_gives_up, 0, T_UFFD, 30)                                  \
	X(migrate_dest_wait_failure, 0, T_UFFD, 30)                                 \
	/* test-migrate-tool.c: faultline migrate */                               \
	X(migrate_tool_usage_errors, 0, 0, 0)                                      \
	X(migrate_tool_demo, 0, T_UFFD, 120)                                       \
	X(migrate_two_namespaces, 0, T_UFFD | T_ROOT, 120)                         \
	X(migrate_tool_source_gone, 0, T_UFFD, 120)                                \
	X(migrate_tool_dest_gone, 0, T_UFFD, 120)                                  \
	X(migrate_tool_first_use, 0, 0, 60)                                        \
	X(migrate_tool_x509, 0, T_UFFD, 120)                                       \
	/* test-monitor-server-pager.c: what the monitor server needs of the pager */ \
	X(pager_event_hook_order, FL_FEAT_EVENT_REMOVE | FL_FEAT_EVENT_REMAP |     \
	  FL_FEAT_EVENT_UNMAP, T_UFFD, 0)                                          \
	X(pager_event_hook_fork, FL_FEAT_EVENT_FORK | FL_FEAT_EVENT_REMOVE |       \
	  FL_FEAT_EVENT_REMAP | FL_FEAT_EVENT_UNMAP, T_UFFD, 0)                    \
	X(pager_region_keep_registered, 0, T_UFFD, 0)                              \
	/* test-dirty.c: dirty tracking and write-back */                          \
	X(dirty_sync_file_threads, FL_FEAT_PAGEFAULT_FLAG_WP, T_UFFD, 30)          \
	X(dirty_sync_mem_threads, FL_FEAT_PAGEFAULT_FLAG_WP, T_UFFD, 30)           \
	X(dirty_sync_file_sigbus, FL_FEAT_PAGEFAULT_FLAG_WP | FL_FEAT_SIGBUS,      \
	  T_UFFD, 30)                                                              \
	X(dirty_sync_mem_loop, FL_FEAT_PAGEFAULT_FLAG_WP, T_UFFD, 30)              \
	X(dirty_evict_refault_file_sigbus, FL_FEAT_PAGEFAULT_FLAG_WP |             \
	  FL_FEAT_SIGBUS,                                                          \
	  T_UFFD, 30)                                                              \
	X(dirty_evict_refault_mem_sigbus, FL_FEAT_PAGEFAULT_FLAG_WP |              \
	  FL_FEAT_SIGBUS,                                                          \
	  T_UFFD, 30)                                                              \
	X(dirty_evict_refault_file_loop, FL_FEAT_PAGEFAULT_FLAG_WP,                \
	  T_UFFD, 30)                                                              \
	X(dirty_evict_refault_mem_loop, FL_FEAT_PAGEFAULT_FLAG_WP,                 \
	  T_UFFD, 30)                                                              \
	X(dirty_store_write_fails_threads, FL_FEAT_PAGEFAULT_FLAG_WP,              \
	  T_UFFD, 30)                                                              \
	X(dirty_store_write_fails_sigbus, FL_FEAT_PAGEFAULT_FLAG_WP |              \
	  FL_FEAT_SIGBUS,                                                          \
	  T_UFFD, 30)                                                              \
	X(dirty_on_wp_threads, FL_FEAT_PAGEFAULT_FLAG_WP, T_UFFD, 30)              \
	X(dirty_on_wp_sigbus, FL_FEAT_PAGEFAULT_FLAG_WP | FL_FEAT_SIGBUS,          \
	  T_UFFD, 30)                                                              \
	X(dirty_on_wp_loop, FL_FEAT_PAGEFAULT_FLAG_WP, T_UFFD, 30)                 \
	X(dirty_rejects, FL_FEAT_PAGEFAULT_FLAG_WP, T_UFFD, 0)                     \
	X(dirty_writes_race_writeback_threads, FL_FEAT_PAGEFAULT_FLAG_WP,          \
	  T_UFFD | T_STRESS, 120)                                                  \
	X(dirty_writes_race_eviction_sigbus, FL_FEAT_PAGEFAULT_FLAG_WP |           \
	  FL_FEAT_SIGBUS,                                                          \
	  T_UFFD | T_STRESS, 120)                                                  \
	X(dirty_writes_race_eviction_loop, FL_FEAT_PAGEFAULT_FLAG_WP,              \
	  T_UFFD | T_STRESS, 120)                                                  \
	X(dirty_budget_writers_threads_file, FL_FEAT_PAGEFAULT_FLAG_WP |           \
	  FL_FEAT_MOVE, T_UFFD | T_STRESS, 120)                                    \
	X(dirty_budget_writers_sigbus_mem, FL_FEAT_PAGEFAULT_FLAG_WP |             \
	  FL_FEAT_SIGBUS, T_UFFD | T_STRESS, 120)                                  \
	X(dirty_budget_writers_loop_file, FL_FEAT_PAGEFAULT_FLAG_WP,               \
	  T_UFFD | T_STRESS, 120)                                                  \
	X(dirty_sync_after_discard_loop, FL_FEAT_PAGEFAULT_FLAG_WP, T_UFFD, 30)    \
	X(dirty_shmem_sync_and_evict,                                              \
	  FL_FEAT_MISSING_SHMEM | FL_FEAT_WP_HUGETLBFS_SHMEM, T_UFFD, 60)           \
	X(dirty_write_moved_piece, FL_FEAT_PAGEFAULT_FLAG_WP | FL_FEAT_EVENT_REMAP, \
	  T_UFFD, 0)                                                               \
	X(dirty_hugetlb_sync_and_evict,                                            \
	  FL_FEAT_MISSING_HUGETLBFS | FL_FEAT_WP_HUGETLBFS_SHMEM,                  \
	  T_UFFD | T_HUGETLB, 60)                                                  \
	X(dirty_sync_races_discard_threads, FL_FEAT_PAGEFAULT_FLAG_WP |            \
	  FL_FEAT_EVENT_REMOVE, T_UFFD, 120)                                       \
	/* test-monitor-server.c: the monitor server, clients in other processes */ \
	X(monitor_server_serves_clients, FL_FEAT_EVENT_REMAP |                     \
	  FL_FEAT_EVENT_REMOVE | FL_FEAT_EVENT_UNMAP, T_UFFD, 30)                  \
	X(monitor_server_events, FL_FEAT_EVENT_REMAP | FL_FEAT_EVENT_REMOVE |      \
	  FL_FEAT_EVENT_UNMAP, T_UFFD, 30)                                         \
	X(monitor_server_fork_children, FL_FEAT_EVENT_FORK | FL_FEAT_EVENT_REMAP | \
	  FL_FEAT_EVENT_REMOVE | FL_FEAT_EVENT_UNMAP, T_UFFD, 60)                  \
	X(monitor_server_fork_grandchild_exec, FL_FEAT_EVENT_FORK |                \
	  FL_FEAT_EVENT_REMAP | FL_FEAT_EVENT_REMOVE | FL_FEAT_EVENT_UNMAP, T_UFFD, \
	  60)                                                                      \
	X(monitor_server_many_clients, FL_FEAT_EVENT_REMAP | FL_FEAT_EVENT_REMOVE |\
	  FL_FEAT_EVENT_UNMAP, T_UFFD, 60)                                         \
	X(monitor_server_kill_restart, FL_FEAT_EVENT_REMAP | FL_FEAT_EVENT_REMOVE |\
	  FL_FEAT_EVENT_UNMAP, T_UFFD, 60)                                         \
	X(monitor_server_fork_kill_restart, FL_FEAT_EVENT_FORK |                   \
	  FL_FEAT_EVENT_REMAP | FL_FEAT_EVENT_REMOVE | FL_FEAT_EVENT_UNMAP, T_UFFD, \
	  60)                                                                      \
	X(monitor_server_fail_loud, FL_FEAT_EVENT_REMAP | FL_FEAT_EVENT_REMOVE |   \
	  FL_FEAT_EVENT_UNMAP, T_UFFD, 30)                                         \
	X(monitor_server_exit_with_faults_pending, FL_FEAT_EVENT_REMAP |           \
	  FL_FEAT_EVENT_REMOVE | FL_FEAT_EVENT_UNMAP, T_UFFD, 30)                  \
	X(monitor_server_firecracker, FL_FEAT_EVENT_REMOVE, T_UFFD, 30)            \
	X(monitor_server_firecracker_hugetlb, FL_FEAT_EVENT_REMOVE |               \
	  FL_FEAT_MISSING_HUGETLBFS, T_UFFD | T_HUGETLB, 30)                       \
	X(monitor_server_firecracker_snapshot, FL_FEAT_EVENT_REMOVE, T_UFFD, 30)   \
	X(monitor_server_firecracker_snapshot_hugetlb, FL_FEAT_EVENT_REMOVE |      \
	  FL_FEAT_MISSING_HUGETLBFS, T_UFFD | T_HUGETLB, 30)                       \
	X(monitor_server_firecracker_snapshot_refused, FL_FEAT_EVENT_REMOVE,       \
	  T_UFFD, 30)                                                              \
	X(monitor_server_firecracker_ws, FL_FEAT_EVENT_REMOVE, T_UFFD, 30)         \
	X(monitor_server_firecracker_ws_hugetlb, FL_FEAT_EVENT_REMOVE |            \
	  FL_FEAT_MISSING_HUGETLBFS, T_UFFD | T_HUGETLB, 30)                       \
	X(monitor_server_firecracker_ws_tool, FL_FEAT_EVENT_REMOVE, T_UFFD, 30)    \
	X(monitor_server_firecracker_ws_mismatch, FL_FEAT_EVENT_REMOVE, T_UFFD, 30)\
	X(monitor_server_malformed, FL_FEAT_EVENT_REMAP | FL_FEAT_EVENT_REMOVE |   \
	  FL_FEAT_EVENT_UNMAP, T_UFFD, 60)                                         \
	X(monitor_server_security, FL_FEAT_EVENT_REMAP | FL_FEAT_EVENT_REMOVE |    \
	  FL_FEAT_EVENT_UNMAP, T_UFFD | T_ROOT, 30)                                \
	X(monitor_server_silent_crowd, 0, T_UFFD | T_ROOT, 120)                     \
	X(monitor_server_refused_fd_reuse, 0, T_ROOT | T_STRESS, 60)               \
	X(monitor_server_tool_usage, 0, 0, 0)                                      \
	X(monitor_server_tool_errors, 0, 0, 30)                                    \
	X(monitor_server_tool_group_lookup, 0, 0, 0)                               \
	X(monitor_server_tool_socket_group, 0, T_ROOT, 30)                         \
	X(monitor_server_socket_mode, 0, T_UFFD | T_ROOT, 30)                      \
	/* test-remote.c: the page server's messages, faultline serve, the remote store */ \
	X(pg_codec_roundtrip, 0, 0, 0)                                             \
	X(pg_codec_refuses_malformed, 0, 0, 0)                                     \
	X(pg_fuzz_seeds, 0, 0, 0)                                                  \
	X(serve_pager_reads_match_file, 0, T_UFFD, 60)                             \
	X(serve_callers_share_connections, 0, 0, 60)                               \
	X(serve_writes_persist, 0, 0, 30)                                          \
	X(serve_snapshot_file, 0, 0, 30)                                           \
	X(serve_name_escapes_refused, 0, 0, 30)                                    \
	X(serve_malformed_closes_only_that_connection, 0, 0, 30)                   \
	X(serve_silent_connections_and_idle_timeout, 0, 0, 60)                     \
	X(serve_sigterm_answers_then_exits, 0, 0, 30)                              \
	X(serve_outage_faults_wait_then_resume, 0, T_UFFD, 60)                     \
	X(serve_outage_past_deadline_sigbus, FL_FEAT_POISON, T_UFFD, 30)           \
	X(serve_tool_usage_errors, 0, 0, 30)                                       \
	X(serve_tls_psk, 0, 0, 30)                                                 \
	X(serve_tls_x509, 0, 0, 30)                                                \
	X(serve_region_sync_writes_back, FL_FEAT_PAGEFAULT_FLAG_WP, T_UFFD, 60)    \
	X(serve_budget_evicts_to_server, FL_FEAT_MOVE | FL_FEAT_PAGEFAULT_FLAG_WP, T_UFFD, 60) \
	X(remote_open_refuses_bad_arguments, 0, 0, 0)                              \
	/* test-restore.c: staged MOVE from file stores, eager restore */         \
	X(restore_staged_move_threads, 0, T_UFFD, 30)                              \
	X(restore_staged_chunks_stay_huge, 0, T_UFFD, 30)                          \
	X(restore_staged_move_sigbus, FL_FEAT_SIGBUS, T_UFFD, 30)                  \
	X(restore_staged_move_discarded_stays_zero, FL_FEAT_EVENT_REMOVE, T_UFFD,  \
	  30)                                                                      \
	X(restore_eager_populate, 0, T_UFFD, 30)                                   \
	X(ws_record_replay_threads, 0, T_UFFD, 30)                                 \
	X(ws_record_replay_sigbus, FL_FEAT_SIGBUS, T_UFFD, 30)                     \
	X(ws_record_replay_loop, 0, T_UFFD, 30)                                    \
	X(ws_replay_second_process, 0, T_UFFD, 30)                                 \
	X(ws_replay_faults_go_first, 0, T_UFFD, 30)                                \
	X(ws_replay_refuses_bad_files, 0, T_UFFD, 30)                              \
	X(ws_loading_set_refused_for_move_store, 0, T_UFFD, 0)                   \
	X(ws_loading_set_zero_and_corrupt, 0, T_UFFD, 30)                          \
	/* end of table */

#define T_DECLARE(name, feats, flags, timeout) void test_##name(void);
T_ALL_TESTS(T_DECLARE)
#undef T_DECLARE

#endif /* FL_TEST_TESTS_H */
