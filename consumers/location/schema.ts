/**
 * mod_db's tables and indexes in call_limit.db, as mod_db itself creates them
 * (src/mod/applications/mod_db/mod_db.c), so a file we create first is the file
 * mod_db would have created. The unique index on (data_key, realm) is why every
 * write deletes realm + key before inserting.
 */
export const MOD_DB_TABLES: Record<string, string> = {
  limit_data: 'CREATE TABLE limit_data (\n   hostname   VARCHAR(255),\n   realm      VARCHAR(255),\n   id         VARCHAR(255),\n   uuid       VARCHAR(255)\n)',
  db_data: 'CREATE TABLE db_data (\n   hostname   VARCHAR(255),\n   realm      VARCHAR(255),\n   data_key   VARCHAR(255),\n   data       VARCHAR(255)\n)',
  group_data: 'CREATE TABLE group_data (\n   hostname   VARCHAR(255),\n   groupname  VARCHAR(255),\n   url        VARCHAR(255)\n)',
};

export const MOD_DB_INDEXES: Record<string, string> = {
  ld_hostname: 'create index ld_hostname on limit_data (hostname)',
  ld_uuid: 'create index ld_uuid on limit_data (uuid)',
  ld_realm: 'create index ld_realm on limit_data (realm)',
  ld_id: 'create index ld_id on limit_data (id)',
  dd_realm: 'create index dd_realm on db_data (realm)',
  dd_data_key_realm: 'create unique index dd_data_key_realm on db_data (data_key,realm)',
  gd_groupname: 'create index gd_groupname on group_data (groupname)',
  gd_url: 'create index gd_url on group_data (url)',
};
