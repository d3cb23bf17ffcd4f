-- A schema-2 store written by imstore at commit 005b482 (tests/data/make_store_v2.py).
BEGIN TRANSACTION;
CREATE TABLE "attachment" ("message_id" INTEGER NOT NULL PRIMARY KEY, "remote_url" TEXT NOT NULL, "local_path" TEXT NOT NULL, "size" INTEGER NOT NULL, "file_status" INTEGER NOT NULL, "thumb_status" INTEGER, FOREIGN KEY ("message_id") REFERENCES "message" ("id") ON DELETE CASCADE);
INSERT INTO "attachment" VALUES(5,'http://x/p.png','',0,1,1);
CREATE TABLE "conversation" ("conv_id" TEXT NOT NULL PRIMARY KEY, "chat_type" INTEGER NOT NULL, "unread_count" INTEGER NOT NULL, "last_rowid" INTEGER, "last_sort" INTEGER NOT NULL, "last_activity" INTEGER NOT NULL, "ext" BLOB, "lm_msg_id" TEXT, "lm_local_id" TEXT, "lm_type" INTEGER, "lm_sender" TEXT, "lm_recipient" TEXT, "lm_direction" INTEGER, "lm_status" INTEGER, "lm_local_time" INTEGER, "lm_server_time" INTEGER, "lm_is_read" INTEGER, "lm_is_delivered" INTEGER, "lm_is_read_acked" INTEGER, "lm_need_group_ack" INTEGER, "lm_group_ack_count" INTEGER, "lm_body" BLOB, "lm_ext" BLOB, "lm_edited_at" INTEGER, "lm_recalled_at" INTEGER);
INSERT INTO "conversation" VALUES('bob',1,3,5,5000,5000,NULL,'m5',NULL,2,'bob','alice',2,3,5000,5000,0,0,0,0,0,X'018BAA6C6F63616C5F70617468A0AC646973706C61795F6E616D65A962656163682E706E67AA72656D6F74655F75726CAE687474703A2F2F782F702E706E67A6736563726574A0A473697A6500AF646F776E6C6F61645F73746174757301A577696474680AA668656967687414AE7468756D626E61696C5F70617468A0AD7468756D626E61696C5F75726CA0B07468756D626E61696C5F73746174757301',NULL,NULL,NULL);
INSERT INTO "conversation" VALUES('team',2,3,7,8000,8000,X'82A57469746C65AB5465616D20E59BA2E9989FA5636F6C6F72A4626C7565','g3',NULL,1,'carol','team',2,3,8000,8000,0,0,0,0,0,X'0181A474657874A0',NULL,NULL,8500);
INSERT INTO "conversation" VALUES('empty',1,0,NULL,0,0,X'81A57469746C65A64E6F626F6479',NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL);
CREATE TABLE "group_ack" ("id" INTEGER NOT NULL PRIMARY KEY, "msg_id" TEXT NOT NULL, "reader" TEXT NOT NULL, "ack_time" INTEGER NOT NULL);
CREATE TABLE "message" ("id" INTEGER NOT NULL PRIMARY KEY, "msg_id" TEXT NOT NULL, "local_id" TEXT, "conv_id" TEXT NOT NULL, "chat_type" INTEGER NOT NULL, "type" INTEGER NOT NULL, "sender" TEXT NOT NULL, "recipient" TEXT NOT NULL, "direction" INTEGER NOT NULL, "status" INTEGER NOT NULL, "local_time" INTEGER NOT NULL, "server_time" INTEGER, "sort_time" INTEGER NOT NULL, "is_read" INTEGER NOT NULL, "is_delivered" INTEGER NOT NULL, "is_read_acked" INTEGER NOT NULL, "need_group_ack" INTEGER NOT NULL, "group_ack_count" INTEGER NOT NULL, "body" BLOB NOT NULL, "ext" BLOB, "edited_at" INTEGER, "recalled_at" INTEGER);
INSERT INTO "message" VALUES(1,'m1',NULL,'bob',1,1,'bob','alice',2,3,1000,1000,1000,1,0,0,0,0,X'0181A474657874AE68656C6C6F2066726F6D20626F62',NULL,NULL,NULL);
INSERT INTO "message" VALUES(2,'m2',NULL,'bob',1,1,'alice','bob',1,3,2000,NULL,2000,1,0,0,0,0,X'0181A474657874B7686920626F622C206C756E636820746F6D6F72726F773F',NULL,NULL,NULL);
INSERT INTO "message" VALUES(3,'m3',NULL,'bob',1,1,'bob','alice',2,3,3000,3000,3000,0,0,0,0,0,X'0181A474657874AFE6988EE5A4A9E59083E58D88E9A5AD',NULL,NULL,NULL);
INSERT INTO "message" VALUES(4,'m4',NULL,'bob',1,6,'bob','alice',2,3,4000,4000,4000,0,0,0,0,0,X'0184A86C61746974756465CB40486CCCCCCCCCCDA96C6F6E676974756465CB4002CCCCCCCCCCCDA761646472657373AD527565206465205269766F6C69AD6275696C64696E675F6E616D65A0',X'81A46E6F7465A96D6565742068657265',NULL,NULL);
INSERT INTO "message" VALUES(5,'m5',NULL,'bob',1,2,'bob','alice',2,3,5000,5000,5000,0,0,0,0,0,X'018BAA6C6F63616C5F70617468A0AC646973706C61795F6E616D65A962656163682E706E67AA72656D6F74655F75726CAE687474703A2F2F782F702E706E67A6736563726574A0A473697A6500AF646F776E6C6F61645F73746174757301A577696474680AA668656967687414AE7468756D626E61696C5F70617468A0AD7468756D626E61696C5F75726CA0B07468756D626E61696C5F73746174757301',NULL,NULL,NULL);
INSERT INTO "message" VALUES(6,'g1',NULL,'team',2,1,'carol','team',2,3,6000,6000,6000,0,0,0,0,0,X'0181A474657874AF7374616E647570206174206E696E65',NULL,NULL,NULL);
INSERT INTO "message" VALUES(7,'g3',NULL,'team',2,1,'carol','team',2,3,8000,8000,8000,0,0,0,0,0,X'0181A474657874A0',NULL,NULL,8500);
INSERT INTO "message" VALUES(9,'g2',NULL,'team',2,8,'dave','team',2,3,7000,7000,7000,0,0,0,0,0,X'0182A56576656E74AA7265645F7061636B6574A6706172616D7381A6616D6F756E74A135',NULL,NULL,NULL);
CREATE TABLE "meta" ("key" TEXT NOT NULL PRIMARY KEY, "value" TEXT NOT NULL);
INSERT INTO "meta" VALUES('schema_version','2');
INSERT INTO "meta" VALUES('user_id','alice');
CREATE TABLE "pending_receipt" ("msg_id" TEXT NOT NULL, "kind" INTEGER NOT NULL, "received_at" INTEGER, PRIMARY KEY ("msg_id", "kind"));
INSERT INTO "pending_receipt" VALUES('never-came',1,1796420138063);
CREATE TABLE "search_outbox" ("id" INTEGER NOT NULL PRIMARY KEY, "rowid" INTEGER NOT NULL, "op" INTEGER NOT NULL);
CREATE TABLE stretch (id INTEGER PRIMARY KEY, conv_id TEXT NOT NULL, start_time INTEGER, end_time INTEGER, older_cursor TEXT, newer_cursor TEXT);
CREATE TABLE tombstone (msg_id TEXT PRIMARY KEY, conv_id TEXT NOT NULL) WITHOUT ROWID;
INSERT INTO "tombstone" VALUES('g4','team');
CREATE TABLE tombstone_range (id INTEGER PRIMARY KEY, conv_id TEXT NOT NULL, start_time INTEGER NOT NULL, end_time INTEGER NOT NULL);
CREATE UNIQUE INDEX "message_msg_id" ON "message" ("msg_id");
CREATE UNIQUE INDEX "group_ack_msg_id_reader" ON "group_ack" ("msg_id", "reader");
CREATE TRIGGER conversation_last_moved 
        AFTER UPDATE OF last_rowid ON conversation FOR EACH ROW
        BEGIN
          UPDATE conversation SET (lm_msg_id, lm_local_id, lm_type, lm_sender, lm_recipient, lm_direction, lm_status, lm_local_time, lm_server_time, lm_is_read, lm_is_delivered, lm_is_read_acked, lm_need_group_ack, lm_group_ack_count, lm_body, lm_ext, lm_edited_at, lm_recalled_at) =
            (SELECT msg_id, local_id, type, sender, recipient, direction, status, local_time, server_time, is_read, is_delivered, is_read_acked, need_group_ack, group_ack_count, body, ext, edited_at, recalled_at FROM message WHERE id = NEW.last_rowid)
          WHERE conv_id = NEW.conv_id;
        END;
CREATE TRIGGER message_last_changed 
        AFTER UPDATE ON message FOR EACH ROW
        WHEN EXISTS (SELECT 1 FROM conversation WHERE conv_id = NEW.conv_id
                     AND last_rowid = NEW.id)
        BEGIN
          UPDATE conversation SET (lm_msg_id, lm_local_id, lm_type, lm_sender, lm_recipient, lm_direction, lm_status, lm_local_time, lm_server_time, lm_is_read, lm_is_delivered, lm_is_read_acked, lm_need_group_ack, lm_group_ack_count, lm_body, lm_ext, lm_edited_at, lm_recalled_at) = (NEW.msg_id, NEW.local_id, NEW.type, NEW.sender, NEW.recipient, NEW.direction, NEW.status, NEW.local_time, NEW.server_time, NEW.is_read, NEW.is_delivered, NEW.is_read_acked, NEW.need_group_ack, NEW.group_ack_count, NEW.body, NEW.ext, NEW.edited_at, NEW.recalled_at)
          WHERE conv_id = NEW.conv_id;
        END;
CREATE INDEX message_conv_sort ON message (conv_id, sort_time, id);
CREATE INDEX message_conv_type_sort ON message (conv_id, type, sort_time, id);
CREATE INDEX message_type_sort ON message (type, sort_time, id);
CREATE INDEX message_sort ON message (sort_time, id);
CREATE INDEX message_unread ON message (conv_id) WHERE direction = 2 AND is_read = 0;
CREATE INDEX message_inprogress ON message (status) WHERE status = 2;
CREATE INDEX message_local_id ON message (local_id) WHERE local_id IS NOT NULL;
CREATE INDEX conversation_activity ON conversation (last_activity);
CREATE INDEX conversation_unread ON conversation (unread_count) WHERE unread_count > 0 AND chat_type != 3;
CREATE INDEX tombstone_range_conv ON tombstone_range (conv_id, start_time);
CREATE INDEX stretch_conv ON stretch (conv_id);
COMMIT;
