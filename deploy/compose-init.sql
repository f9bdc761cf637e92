-- deploy/docker-compose.yml: the shard databases of the two pods
CREATE DATABASE IF NOT EXISTS podjobs_p1;
CREATE DATABASE IF NOT EXISTS podjobs_p2;
GRANT ALL ON podjobs_p1.* TO 'podjobs'@'%';
GRANT ALL ON podjobs_p2.* TO 'podjobs'@'%';
